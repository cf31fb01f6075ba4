"""Which roots muslin accepts, and how it opens files in them."""

from __future__ import annotations

import os
import stat

import pytest

from muslin.paths import UnsafeRoot, check_root, open_private, prepare_root

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@needs_root
def test_a_directory_of_another_user_is_refused_as_root_or_above_it(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    for root in (theirs, theirs / "below", theirs / "x" / "y"):
        with pytest.raises(UnsafeRoot, match=f"{theirs} is owned by uid {NOBODY}, not by root"):
            check_root(str(root))


def test_a_directory_others_can_write_is_refused_unless_sticky_with_our_directory_in_it(tmp_path):
    shared = tmp_path / "shared"
    (shared / "root").mkdir(parents=True)
    shared.chmod(0o777)
    for root in (shared, shared / "root", shared / "new"):
        with pytest.raises(UnsafeRoot, match=f"{shared} is writable by group or others"):
            check_root(str(root))
    shared.chmod(0o1777)  # like /tmp
    check_root(str(shared / "root"))
    check_root(str(shared / "new"))  # created by us, then checked again
    with pytest.raises(UnsafeRoot, match="writable by group or others"):
        check_root(str(shared))


@needs_root
def test_in_a_sticky_directory_only_our_own_entries_are_trusted(tmp_path):
    sticky = tmp_path / "tmp"
    sticky.mkdir(mode=0o1777)
    sticky.chmod(0o1777)
    (sticky / "planted").mkdir()
    os.chown(sticky / "planted", NOBODY, NOBODY)
    with pytest.raises(UnsafeRoot, match=f"planted is owned by uid {NOBODY} in {sticky}, which others can write"):
        check_root(str(sticky / "planted" / "root"))
    os.symlink(tmp_path, sticky / "link")
    os.lchown(sticky / "link", NOBODY, NOBODY)
    with pytest.raises(UnsafeRoot, match=f"link is owned by uid {NOBODY} in {sticky}"):
        check_root(str(sticky / "link" / "root"))


def test_a_symlinked_root_is_checked_where_it_leads(tmp_path):
    safe, unsafe = tmp_path / "safe", tmp_path / "unsafe"
    safe.mkdir()
    unsafe.mkdir(mode=0o777)
    unsafe.chmod(0o777)
    os.symlink(safe, tmp_path / "to-safe")
    os.symlink(unsafe, tmp_path / "to-unsafe")
    check_root(str(tmp_path / "to-safe"))
    with pytest.raises(UnsafeRoot, match=f"{unsafe} is writable by group or others"):
        check_root(str(tmp_path / "to-unsafe"))


def test_prepare_root_makes_its_own_roots_private_and_leaves_other_directories_alone(tmp_path):
    new, empty, earlier, system = tmp_path / "new" / "root", tmp_path / "empty", tmp_path / "earlier", tmp_path / "run"
    for d in (empty, earlier, system):
        d.mkdir()
        d.chmod(0o755)
    (earlier / "muslin.db").write_text("")  # a root an earlier muslin made 0755
    (system / "utmp").write_text("")  # --root /run: not muslin's to change
    for root in (new, empty, earlier, system):
        assert prepare_root(str(root)) == str(root)
    assert [_mode(d) for d in (new, empty, earlier, system)] == [0o700, 0o700, 0o700, 0o755]


def test_files_are_created_private_and_never_through_a_link(tmp_path):
    fd = open_private(str(tmp_path / "muslin.pid"), os.O_WRONLY | os.O_CREAT)
    os.close(fd)
    assert _mode(tmp_path / "muslin.pid") == 0o600
    (tmp_path / "muslin.db").write_text("")
    (tmp_path / "muslin.db").chmod(0o644)
    os.close(open_private(str(tmp_path / "muslin.db"), os.O_RDWR))
    assert _mode(tmp_path / "muslin.db") == 0o600
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.symlink(victim, tmp_path / "muslin.log")
    with pytest.raises(UnsafeRoot, match="muslin.log is a symlink"):
        open_private(str(tmp_path / "muslin.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    assert victim.read_text() == "precious"
