"""Zarr I/O: open inputs read-only, create outputs, OME-Zarr metadata, resume records.

This layer knows about zarr and the filesystem, nothing about registration or dask.
"""

from ._arrays import (
    CHECKSUM,
    FIELD_COMPRESSORS,
    ArrayRef,
    array_ref,
    create_array,
    credentials_problem,
    open_array,
    output_codecs,
    require_shard_aligned,
    require_url_support,
    resolve_shards,
    storage_defaults,
    url_schemes,
    url_store,
)
from ._chunks import check_inputs_stored, missing_chunks, read_region, require_chunks
from ._completion import CompletionRecord
from ._fingerprint import fingerprint
from ._lease import output_scope, read_lease
from ._locations import check_no_overlap
from ._ome import default_axes, multiscale_dataset_paths, write_ome_multiscale_metadata
from ._output import (
    check_side_files,
    normalise_signature,
    open_output_group,
    record_side_files,
    require_shared_store,
)
from ._space import Space, output_space, read_space, recorded_space, write_space
from ._tiff import natural_sort, tiff_to_zarr, tiles_to_zarr
from ._views import (
    ArrayView,
    base_array,
    channel_axis,
    leading_axes,
    recorded_axes,
    select_channel,
    select_channels,
)

__all__ = [
    "CHECKSUM",
    "FIELD_COMPRESSORS",
    "ArrayRef",
    "ArrayView",
    "CompletionRecord",
    "Space",
    "array_ref",
    "base_array",
    "channel_axis",
    "check_inputs_stored",
    "check_no_overlap",
    "check_side_files",
    "create_array",
    "credentials_problem",
    "default_axes",
    "fingerprint",
    "leading_axes",
    "missing_chunks",
    "multiscale_dataset_paths",
    "natural_sort",
    "normalise_signature",
    "open_array",
    "open_output_group",
    "output_codecs",
    "output_scope",
    "output_space",
    "read_lease",
    "read_region",
    "read_space",
    "record_side_files",
    "recorded_axes",
    "recorded_space",
    "require_chunks",
    "require_shard_aligned",
    "require_shared_store",
    "require_url_support",
    "resolve_shards",
    "select_channel",
    "select_channels",
    "storage_defaults",
    "tiff_to_zarr",
    "tiles_to_zarr",
    "url_schemes",
    "url_store",
    "write_ome_multiscale_metadata",
    "write_space",
]
