"""`coterie keygen` files and the [security] table: modes, round trips, and errors that name
the key and the file."""

from __future__ import annotations

import os
import pathlib
import stat

import pytest

from actors.security import public_key_of, read_key_file
from coterie.cli import main
from coterie.config import ConfigError, load

NODES = """
cluster_id = "c"
state_machine = "examples.counter:Counter"
[[nodes]]
id = "n1"
address = "127.0.0.1:7101"
data_dir = "d1"
[[nodes]]
id = "n2"
address = "127.0.0.1:7102"
data_dir = "d2"
"""

SECURE = """
[security]
curve = true
secret_key_file = "keys/{id}.key_secret"
public_key_file = "keys/{id}.key"
allowed_keys = ["keys/client.key"]
"""


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def keys(tmp_path: pathlib.Path, *names: str) -> None:
    assert main(["keygen", *(str(tmp_path / "keys" / n) for n in names)]) == 0


def test_keygen_writes_a_keypair_with_a_private_secret(tmp_path, capsys) -> None:
    old = os.umask(0)  # even a permissive umask must not open up the secret
    try:
        assert main(["keygen", str(tmp_path / "k" / "n1")]) == 0
    finally:
        os.umask(old)
    public_path, secret_path = tmp_path / "k" / "n1.key", tmp_path / "k" / "n1.key_secret"
    assert mode(secret_path) == 0o600
    assert mode(public_path) == 0o644
    public = read_key_file(public_path, "public", secret=False)
    secret = read_key_file(secret_path, "secret", secret=True)
    assert public_key_of(secret) == public
    assert public.decode() in capsys.readouterr().out
    assert secret.decode() not in public_path.read_text()


def test_keygen_keeps_existing_keys_unless_forced(tmp_path, capsys) -> None:
    base = str(tmp_path / "n1")
    assert main(["keygen", base]) == 0
    first = (tmp_path / "n1.key_secret").read_text()
    assert main(["keygen", base]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "n1.key_secret").read_text() == first
    assert main(["keygen", "--force", base]) == 0
    assert (tmp_path / "n1.key_secret").read_text() != first
    assert mode(tmp_path / "n1.key_secret") == 0o600


def test_zeromq_certificate_files_are_read_too(tmp_path) -> None:
    zmq_auth = pytest.importorskip("zmq.auth")
    public_file, secret_file = zmq_auth.create_certificates(str(tmp_path), "node")
    os.chmod(secret_file, 0o600)
    secret = read_key_file(pathlib.Path(secret_file), "secret", secret=True)
    public = read_key_file(pathlib.Path(public_file), "public", secret=False)
    assert public_key_of(secret) == public


BAD_SECURITY = [
    ("", "security: missing: add a [security] table"),
    ("[security]\ncurve = 'yes'\n", "security.curve: must be true or false"),
    ("[security]\ncurve = false\ncolour = 1\n", "security.colour: unknown key"),
    ("[security]\npublic_key_file = 'keys/{id}.key'\n", "security.secret_key_file: missing"),
    (
        "[security]\nsecret_key_file = 'keys/{id}.key_secret'\n",
        "security.public_key_file: missing",
    ),
    (
        "[security]\nsecret_key_file = 'shared.key_secret'\npublic_key_file = 'keys/{id}.key'\n",
        "security.secret_key_file: 'shared.key_secret' must contain {id}",
    ),
    (SECURE.replace('["keys/client.key"]', '"keys/client.key"'), "security.allowed_keys: must be"),
]


@pytest.mark.parametrize(("security", "expected"), BAD_SECURITY)
def test_a_bad_security_table_names_the_key(tmp_path, security: str, expected: str) -> None:
    path = write(tmp_path, NODES + security)
    with pytest.raises(ConfigError, match="^" + str(path).replace(".", r"\.")) as info:
        load(path)
    assert expected in str(info.value)


def test_security_must_be_a_table(tmp_path) -> None:
    with pytest.raises(ConfigError, match="security: must be a table"):
        load(write(tmp_path, "security = 3\n" + NODES))


def test_curve_false_is_the_only_way_off(tmp_path) -> None:
    config = load(write(tmp_path, NODES + "[security]\ncurve = false\n"))
    assert config.curve_for("n1") is None
    # An empty table means curve = true, which then needs its key files.
    with pytest.raises(ConfigError, match=r"security\.secret_key_file: missing"):
        load(write(tmp_path, NODES + "[security]\n"))


def test_a_node_admits_every_node_and_the_allowed_keys(tmp_path) -> None:
    keys(tmp_path, "n1", "n2", "client")
    config = load(write(tmp_path, NODES + SECURE))
    curve = config.curve_for("n1")
    assert curve is not None
    key = lambda name: read_key_file(tmp_path / "keys" / f"{name}.key", name, secret=False)  # noqa: E731
    assert curve.public_key == key("n1")
    assert curve.allowed_keys == {key("n1"), key("n2"), key("client")}
    assert curve.server_keys == {"127.0.0.1:7101": key("n1"), "127.0.0.1:7102": key("n2")}
    client = config.client_curve(tmp_path / "keys" / "client.key_secret")
    assert client is not None and client.public_key == key("client")
    assert client.server_keys == curve.server_keys


def test_key_file_errors_name_the_key_the_node_and_the_path(tmp_path) -> None:
    config_path = write(tmp_path, NODES + SECURE)
    config = load(config_path)  # key files are read when a node starts, not to parse
    keys(tmp_path, "n1", "client")
    missing = tmp_path / "keys" / "n2.key"
    with pytest.raises(ConfigError) as info:
        config.curve_for("n1")
    message = str(info.value)
    assert message.startswith(str(config_path))
    assert "security.public_key_file of node n2" in message
    assert str(missing) in message and "no such file" in message

    keys(tmp_path, "n2")
    secret = tmp_path / "keys" / "n1.key_secret"
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=r"secret_key_file of node n1.*chmod 600"):
        config.curve_for("n1")
    secret.chmod(0o600)

    (tmp_path / "keys" / "client.key").write_text("not a key\n")
    with pytest.raises(ConfigError, match=r"security.allowed_keys\[0\].*not a public key"):
        config.curve_for("n1")
    keys_dir = tmp_path / "keys"
    (keys_dir / "client.key").write_text("")
    with pytest.raises(ConfigError, match="no public key in the file"):
        config.curve_for("n1")

    (keys_dir / "client.key").write_bytes((keys_dir / "n1.key_secret").read_bytes())
    with pytest.raises(ConfigError, match="holds a secret key, not a public one"):
        config.curve_for("n1")
    keys(tmp_path, "client2")
    (keys_dir / "client.key").write_bytes((keys_dir / "client2.key").read_bytes())

    (keys_dir / "n1.key").write_bytes((keys_dir / "n2.key").read_bytes())
    with pytest.raises(ConfigError, match=r"public_key_file of node n1.*does not match"):
        config.curve_for("n1")


def test_a_node_with_a_missing_key_exits_with_the_reason(tmp_path, capsys) -> None:
    config_path = write(tmp_path, NODES + SECURE)
    assert main(["node", "--config", str(config_path), "--id", "n1"]) == 2
    err = capsys.readouterr().err
    assert "security.secret_key_file of node n1" in err
    assert str(tmp_path / "keys" / "n1.key_secret") in err
