"""outlast-jsondir: an example outlast store keeping each run as JSON files.

Open it with ``outlast.open("jsondir:///path/to/dir")``. It exists to show
how a third-party adapter is built (docs/writing-an-adapter.md) and proven
with outlast-conformance; it is correct, including across processes on one
machine, but not tuned for large transcripts.
"""

from outlast_jsondir.runfiles import RunDocument, RunFiles
from outlast_jsondir.store import JsonDirCheckpointer, JsonDirStore

__all__ = ["JsonDirCheckpointer", "JsonDirStore", "RunDocument", "RunFiles"]
