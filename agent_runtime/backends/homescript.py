"""The POSIX ``sh`` script that resolves and changes a session's home from inside its
container (docs/architecture.md §23), and the parsing of what it prints (pure).

The Docker backend runs it with ``docker exec``, the Kubernetes backend through the pod's
``exec`` subresource: links are resolved where they mean something, inside the container,
with the container user's rights. ``sh -c SCRIPT sh <op> <home> <relative path> [args]``:

* ``stat`` / ``list`` / ``delete``: resolve with ``realpath``, refuse what leaves the home,
  print ``OK`` and the result (``stat -c`` lines; a listing's records end with a NUL);
* ``put`` / ``finish`` / ``abort``: where an upload goes (the target directory, its owner, the
  name), the rename of the complete temporary file into place, its removal;
* ``read``: refuse what is not a regular file, print ``OK``, then the file as a one-member tar
  stream (``tar -c``; the header carries the size the content matches);
* ``write <size> <token>``: create ``.ss-upload-<token>`` beside the target, print ``OK`` and
  its path, copy exactly ``size`` bytes of stdin into it (``head -c``: the end is known from
  the size, so no end-of-input signal is needed), check its size, rename it over the target
  and print ``DONE``; a short input removes it and prints ``ERR incomplete``, a failed write
  (a full volume) removes it and prints ``ERR error``.

Every refusal is one line ``ERR <code> <message>`` with exit status 0, so a failure of the
transport (non-zero status, no ``OK``) is told apart from a refusal. The tools come from
coreutils or, where an image only has the ``busybox`` binary, its applets.
"""

from __future__ import annotations

from agent_runtime.backends.homefiles import (
    MAX_LIST_ENTRIES,
    HomeEntry,
    HomeFileError,
    HomePathConflict,
    HomePathEscape,
    HomePathInvalid,
    HomePathNotFound,
    HomeUploadIncomplete,
)

SCRIPT = r"""
for t in realpath stat mv rm head tar; do
  command -v "$t" >/dev/null 2>&1 || eval "$t() { busybox $t \"\$@\"; }"
done
fail() { printf 'ERR %s %s\n' "$1" "$2"; exit 0; }
op=$1; home=$2; rel=$3
h=$(realpath "$home" 2>/dev/null) || fail not_found "The session's home directory does not exist."
inside() { case "$1" in "$h"|"$h"/*) return 0;; esac; return 1; }
p="$h${rel:+/$rel}"
resolve() {
  { [ -e "$1" ] || [ -L "$1" ]; } || fail not_found "No such file or directory in the home."
  r=$(realpath "$1" 2>/dev/null) || fail not_found "No such file or directory in the home."
  inside "$r" || fail path_outside_home "The path leads outside the session's home."
  [ -e "$r" ] || [ -L "$r" ] || fail not_found "No such file or directory in the home."
}
parent() {
  [ -n "$rel" ] || fail invalid_path "The home itself cannot be written or deleted."
  [ -e "${1%/*}" ] || fail not_found "The folder to put it in does not exist."
  d=$(realpath "${1%/*}" 2>/dev/null) || fail not_found "The folder to put it in does not exist."
  inside "$d" || fail path_outside_home "The path leads outside the session's home."
  [ -d "$d" ] || fail conflict "A part of the path is not a directory."
  n=${1##*/}
}
target() {
  if [ -e "$p" ] || [ -L "$p" ]; then
    resolve "$p"
    [ -d "$r" ] && fail conflict "A directory has this name."
    d=${r%/*}; n=${r##*/}
  else
    parent "$p"
  fi
}
case "$op" in
  stat)
    resolve "$p"
    printf 'OK %s\n' "$(stat -c '%F|%s|%Y' -- "$r")"
    printf '%s\n' "$r" ;;
  list)
    resolve "$p"
    [ -d "$r" ] || fail conflict "Not a directory."
    printf 'OK %s\n' "$r"
    for f in "$r"/* "$r"/.[!.]* "$r"/..?*; do
      { [ -e "$f" ] || [ -L "$f" ]; } || continue
      stat -c '%F|%s|%Y|%n' -- "$f"
      printf '\0'
    done ;;
  put)
    target
    printf 'OK %s\n%s\n%s\n' "$(stat -c '%u:%g' -- "$d")" "$d" "$n" ;;
  finish)
    inside "$4" || fail path_outside_home "The path leads outside the session's home."
    mv -f -- "$4/$5" "$4/$6" || fail error "The uploaded file could not be put in place."
    printf 'OK\n' ;;
  abort)
    inside "$4" || fail path_outside_home "The path leads outside the session's home."
    rm -f -- "$4/$5"
    printf 'OK\n' ;;
  delete)
    parent "$p"
    { [ -e "$d/$n" ] || [ -L "$d/$n" ]; } || fail not_found "No such file or directory in the home."
    rm -rf -- "$d/$n" || fail error "It could not be deleted completely."
    printf 'OK\n' ;;
  read)
    resolve "$p"
    [ -d "$r" ] && fail conflict "This is a directory."
    [ -f "$r" ] || fail conflict "Not a regular file."
    printf 'OK\n'
    exec tar -cf - -C "${r%/*}" "./${r##*/}" ;;
  write)
    case "$4" in ''|*[!0-9]*) fail invalid_path "The size must be a number.";; esac
    case "$5" in ''|*[!0-9a-f]*) fail invalid_path "The upload token must be hexadecimal.";; esac
    target
    t="$d/.ss-upload-$5"
    (set -C; : > "$t") 2>/dev/null || fail error "The folder cannot be written to."
    printf 'OK %s\n' "$t"
    head -c "$4" > "$t" || { rm -f -- "$t"; fail error "The file could not be written in full (is the home's volume full?)."; }
    s=$(stat -c %s -- "$t" 2>/dev/null)
    [ "$s" = "$4" ] || { rm -f -- "$t"; fail incomplete "The upload ended after ${s:-0} of $4 bytes."; }
    mv -f -- "$t" "$d/$n" || { rm -f -- "$t"; fail error "The uploaded file could not be put in place."; }
    printf 'DONE %s\n' "$n" ;;
  *) fail invalid_path "unknown operation" ;;
esac
"""

ERRORS: dict[str, type[HomeFileError]] = {
    "not_found": HomePathNotFound,
    "path_outside_home": HomePathEscape,
    "conflict": HomePathConflict,
    "invalid_path": HomePathInvalid,
    "incomplete": HomeUploadIncomplete,
}

_TYPES = {"regular file": "file", "regular empty file": "file", "directory": "directory", "symbolic link": "link"}


def command(op: str, home: str, rel: str, *extra: str) -> list[str]:
    """The argv that runs :data:`SCRIPT` for ``op`` in the container."""
    return ["sh", "-c", SCRIPT, "sh", op, home, rel, *extra]


def refusal(line: bytes) -> HomeFileError | None:
    """The error an ``ERR <code> <message>`` line names (None for any other line)."""
    if not line.startswith(b"ERR "):
        return None
    _, name, message = (line.decode("utf-8", "replace").rstrip("\n").split(" ", 2) + [""])[:3]
    return ERRORS.get(name, HomeFileError)(message or "The file operation failed.")


def entry_type(kind: str) -> str:
    return _TYPES.get(kind, "other")


def parse_stat(line: str, name: str) -> HomeEntry:
    """``<%F>|<size>|<mtime>`` as the script prints it."""
    kind, size, mtime = line.rsplit("|", 2)
    return HomeEntry(name=name, type=entry_type(kind), size=int(size), mtime=float(mtime))


def parse_listing(output: bytes, directory: str) -> list[HomeEntry]:
    """Entries from ``stat -c '%F|%s|%Y|%n'`` lines, each followed by a NUL (pure)."""
    entries = []
    prefix = directory.rstrip("/") + "/"
    for record in output.split(b"\0"):
        text = record.strip(b"\n").decode("utf-8", "surrogateescape")
        if not text:
            continue
        kind, size, mtime, path = text.split("|", 3)
        name = path[len(prefix) :] if path.startswith(prefix) else path.rsplit("/", 1)[-1]
        entries.append(HomeEntry(name=name, type=entry_type(kind), size=int(size), mtime=float(mtime)))
        if len(entries) >= MAX_LIST_ENTRIES:
            break
    entries.sort(key=lambda e: (e.type != "directory", e.name))
    return entries
