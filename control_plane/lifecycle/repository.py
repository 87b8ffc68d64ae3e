"""Bad entries of the model repository, found before Triton trips over them.

One broken symlink makes Triton refuse its whole repository index, and a
directory without a usable config fails to load with "failed to poll from model
repository", which names no cause. Each reconciliation pass scans the repository
(blocking: run in a thread) and reports each bad entry by name with a short
reason, never an absolute path; the lifecycle skips those entries, everything
else keeps converging.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

CONFIG_FILENAME = "config.pbtxt"

# (mtime_ns, size, inode) of a config.pbtxt -> its verdict: most configs never change,
# so a pass parses only new or edited ones.
_Signature = tuple[int, int, int]


class RepositoryScanner:
    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self._configs: dict[str, tuple[_Signature, str | None]] = {}

    def scan(self) -> dict[str, str]:
        """name -> reason for every entry Triton cannot use; empty when all is well."""
        try:
            entries = sorted(os.scandir(self.repository), key=lambda entry: entry.name)
        except OSError as exc:
            return {"(repository)": f"cannot be listed ({exc.strerror})"}
        bad: dict[str, str] = {}
        for entry in entries:
            reason = self._check(entry)
            if reason is not None:
                bad[entry.name] = reason
        for name in self._configs.keys() - {entry.name for entry in entries}:
            del self._configs[name]  # gone from the repository: forget its verdict
        return bad

    def _check(self, entry: os.DirEntry[str]) -> str | None:
        try:
            is_dir = entry.is_dir()  # follows symlinks
            os.stat(entry.path)  # a dangling or looping link fails here, as in Triton
        except OSError as exc:
            if entry.is_symlink():
                dangling = exc.errno == errno.ENOENT
                return "broken symbolic link" if dangling else f"bad link ({exc.strerror})"
            return f"cannot be read ({exc.strerror})"
        if not is_dir or entry.name.startswith("."):
            return None  # files are not models; dot-names are exports being staged
        try:
            children = {child.name: child.is_dir() for child in os.scandir(entry.path)}
        except OSError as exc:
            return f"directory cannot be read ({exc.strerror})"
        if CONFIG_FILENAME not in children:
            return f"no {CONFIG_FILENAME}"
        if not any(name.isdigit() and is_version for name, is_version in children.items()):
            return "no version directory (1/, 2/, ...)"
        return self._config_verdict(entry.name, Path(entry.path) / CONFIG_FILENAME)

    def _config_verdict(self, name: str, path: Path) -> str | None:
        try:
            stat = path.stat()
            signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            cached = self._configs.get(name)
            if cached is not None and cached[0] == signature:
                return cached[1]
            text = path.read_text(encoding="utf-8")
        except OSError as exc:  # strerror, not str(exc): that one names the path
            return f"{CONFIG_FILENAME} cannot be read ({exc.strerror})"
        except UnicodeError:
            return f"{CONFIG_FILENAME} is not UTF-8 text"
        try:
            text_format.Parse(text, model_config_pb2.ModelConfig())
            verdict = None
        except text_format.ParseError as exc:
            verdict = f"{CONFIG_FILENAME} is not a valid model configuration: {exc}"
        self._configs[name] = (signature, verdict)
        return verdict
