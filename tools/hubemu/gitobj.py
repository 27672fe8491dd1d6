"""Git object hashing helpers shared by the fixture generator and the emulator.

Everything here is pure standard library and deterministic:

* ``blob_oid(data)``           git blob sha1 = sha1(b"blob <n>\\0" + data)
* ``lfs_pointer(sha256, size)`` the standard 3-line git-lfs pointer text (bytes)
* ``tree_oids(files)``          real git tree sha1 of every directory of a flat file map
* ``commit_oid(...)``           real git commit sha1
"""

import hashlib

LFS_POINTER_VERSION = b"version https://git-lfs.github.com/spec/v1\n"

# The fixture's LFS rule (documented in README.md): a file is stored with git-lfs when it is
# at least 64 KiB large or when its name ends with one of these suffixes.
LFS_MIN_SIZE = 64 * 1024
LFS_SUFFIXES = (".safetensors", ".bin")


def is_lfs(path, size):
    return size >= LFS_MIN_SIZE or path.endswith(LFS_SUFFIXES)


def blob_oid(data):
    h = hashlib.sha1()
    h.update(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def lfs_pointer(sha256_hex, size):
    return LFS_POINTER_VERSION + b"oid sha256:" + sha256_hex.encode() + b"\nsize %d\n" % size


def _tree_sort_key(item):
    name, is_dir = item[0], item[1]
    # git orders tree entries by name, comparing a directory as if its name ended with "/"
    return name.encode("utf-8") + (b"/" if is_dir else b"")


def tree_oids(files):
    """files: {path: git blob oid (hex)} -> {dir_path: tree oid (hex)}; the root is ""."""
    children = {"": {}}
    for path, oid in files.items():
        parts = path.split("/")
        d = ""
        for part in parts[:-1]:
            sub = part if not d else d + "/" + part
            children.setdefault(d, {})[part] = (True, sub)
            children.setdefault(sub, {})
            d = sub
        children.setdefault(d, {})[parts[-1]] = (False, oid)
    result = {}
    # deepest directories first so that sub-tree oids are known before their parents
    for d in sorted(children, key=lambda p: (-(p.count("/") + (1 if p else 0)), p)):
        entries = sorted(((name, is_dir, ref) for name, (is_dir, ref) in children[d].items()), key=_tree_sort_key)
        body = bytearray()
        for name, is_dir, ref in entries:
            if is_dir:
                body += b"40000 " + name.encode("utf-8") + b"\0" + bytes.fromhex(result[ref])
            else:
                body += b"100644 " + name.encode("utf-8") + b"\0" + bytes.fromhex(ref)
        h = hashlib.sha1()
        h.update(b"tree %d\0" % len(body))
        h.update(bytes(body))
        result[d] = h.hexdigest()
    return result


def commit_oid(tree, parents, author_name, author_email, unix_ts, message):
    lines = ["tree " + tree]
    for p in parents:
        lines.append("parent " + p)
    ident = "%s <%s> %d +0000" % (author_name, author_email, unix_ts)
    lines.append("author " + ident)
    lines.append("committer " + ident)
    body = ("\n".join(lines) + "\n\n" + message.rstrip("\n") + "\n").encode("utf-8")
    h = hashlib.sha1()
    h.update(b"commit %d\0" % len(body))
    h.update(body)
    return h.hexdigest()
