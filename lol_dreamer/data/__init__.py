"""Episode data: the on-disk format, the reader, the writers and the training samplers (SPEC §4).

See ``docs/data_format.md`` for the layout and the time alignment of the stored arrays.
"""

from lol_dreamer.data.dataset import Dataset, Episode, open_dataset, split_key
from lol_dreamer.data.ingest import ingest_video, read_actions_csv
from lol_dreamer.data.samplers import MixtureSampler, SequenceSampler
from lol_dreamer.data.storage import (
    FORMAT_NAME,
    FORMAT_VERSION,
    DataError,
    add_to_index,
    read_index,
    rebuild_index,
    reserve_names,
    write_episode,
    write_latents,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DataError",
    "Dataset",
    "Episode",
    "MixtureSampler",
    "SequenceSampler",
    "add_to_index",
    "ingest_video",
    "open_dataset",
    "read_actions_csv",
    "read_index",
    "rebuild_index",
    "reserve_names",
    "split_key",
    "write_episode",
    "write_latents",
]
