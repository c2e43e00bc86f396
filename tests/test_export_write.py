"""write_private replaces the target instead of writing through it."""

import os
import stat

from provisioner.export import write_private


def test_existing_file_replaced_with_private_one(tmp_path):
    target = tmp_path / "users.yaml"
    target.write_text("old", encoding="utf-8")
    target.chmod(0o666)
    os.chown(target, 65534, 65534)
    write_private(target, "hashes")
    info = target.stat()
    assert target.read_text(encoding="utf-8") == "hashes"
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid()


def test_symlink_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep", encoding="utf-8")
    link = tmp_path / "out.yaml"
    link.symlink_to(victim)
    write_private(link, "hashes")
    assert victim.read_text(encoding="utf-8") == "keep"
    assert not link.is_symlink()
    assert link.read_text(encoding="utf-8") == "hashes"


def test_no_temporary_file_left(tmp_path):
    write_private(tmp_path / "a.yaml", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml"]
