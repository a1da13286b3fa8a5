"""`coterie waltool` end to end on real log files: output, exit codes, bad input."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from wal_helpers import flip_byte, make_entries, segment_files

from coterie.cli import CliError, main
from coterie.waltool import _Progress, entry_json, parse_duration
from wal import Entry, EntryKind, SegmentedLog
from wal.format import HEADER_SIZE
from wal.kv_compaction import encode_delete, encode_put, msgpack_kv_key

NOW_MS = 1_700_000_000_000
DAY = 86_400_000


def build_log(directory: pathlib.Path, count: int = 120, segment_size: int = 1500) -> None:
    with SegmentedLog.open(directory, segment_size=segment_size) as log:
        for index in range(1, count + 1):
            payload = b"\x00\xffbinary" if index % 10 == 0 else f"entry {index}".encode()
            log.append([Entry(index, 1 + index // 50, 0, index, payload)], sync=False)


def run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what the test printed before (log events of its setup)
    code = main(["waltool", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_text_and_json(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_log(tmp_path / "log")
    code, out, _err = run("info", str(tmp_path / "log"), capsys=capsys)
    assert code == 0
    assert "entries        1..120" in out and "last term      3" in out
    assert out.count(".wal") == len(segment_files(tmp_path / "log"))
    code, out, _err = run("info", "--json", str(tmp_path / "log"), capsys=capsys)
    info = json.loads(out)
    assert (info["first_index"], info["last_index"], info["tail_damage"]) == (1, 120, None)


def test_info_reports_a_torn_tail_without_cutting_it(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_log(tmp_path / "log")
    last = segment_files(tmp_path / "log")[-1]
    with open(last, "r+b") as file:
        file.seek(0, os.SEEK_END)
        file.write(b"\x40\x00\x00\x00torn")
    size = last.stat().st_size
    code, out, err = run("info", "--json", str(tmp_path / "log"), capsys=capsys)
    assert code == 0 and json.loads(out)["tail_damage"]["bytes_to_cut"] > 0
    assert "torn tail" in err
    assert last.stat().st_size == size


def test_verify_a_sound_log(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_log(tmp_path / "log")
    code, out, _err = run("verify", str(tmp_path / "log"), capsys=capsys)
    assert code == 0 and ": OK;" in out and "120 entries (1..120)" in out


def test_verify_names_file_and_offset_of_corruption(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_log(tmp_path / "log")
    second = segment_files(tmp_path / "log")[1]
    flip_byte(second, HEADER_SIZE + 40)
    code, out, _err = run("verify", str(tmp_path / "log"), capsys=capsys)
    assert code == 1
    problem = next(line for line in out.splitlines() if line.startswith("problem:"))
    assert f"{second}: offset {HEADER_SIZE}:" in problem and "sealed segment" in problem
    assert "1 problem(s)" in out


def test_verify_finds_a_gap_and_a_torn_tail_is_only_a_warning(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_log(tmp_path / "log")
    files = segment_files(tmp_path / "log")
    with open(files[-1], "ab") as file:
        file.write(b"\x01")
    code, out, _err = run("verify", str(tmp_path / "log"), capsys=capsys)
    assert code == 0 and "warning:" in out and "torn tail" in out
    missing = files[2]
    first = int(missing.stem)
    last = int(files[3].stem) - 1
    missing.unlink()
    code, out, _err = run("verify", str(tmp_path / "log"), capsys=capsys)
    assert code == 1
    assert f"gap: entries {first}..{last} are missing" in out


def test_range_prints_json_lines(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_log(tmp_path / "log")
    code, out, _err = run("range", str(tmp_path / "log"), "9", "12", capsys=capsys)
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["index"] for line in lines] == [9, 10, 11]
    assert lines[0]["payload"] == "entry 9" and lines[0]["encoding"] == "utf-8"
    assert lines[1]["encoding"] == "base64"
    assert base64.b64decode(lines[1]["payload"]) == b"\x00\xffbinary"
    assert lines[0]["kind"] == "command" and lines[0]["term"] == 1
    code, out, _err = run("range", str(tmp_path / "log"), "118", "500", capsys=capsys)
    assert [json.loads(line)["index"] for line in out.splitlines()] == [118, 119, 120]


def test_bad_input_exits_2_with_a_clear_message(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_log(tmp_path / "log")
    with SegmentedLog.open(tmp_path / "log") as log:
        log.compact_through(30)
    code, _out, err = run("range", str(tmp_path / "log"), "20", "40", capsys=capsys)
    assert code == 2 and "entries up to 30 were compacted" in err
    code, _out, err = run("range", str(tmp_path / "log"), "40", "39", capsys=capsys)
    assert code == 2 and "TO (39) is before FROM (40)" in err
    code, _out, err = run("info", str(tmp_path / "nothing"), capsys=capsys)
    assert code == 2 and "no such log directory" in err
    (tmp_path / "plain").mkdir()
    code, _out, err = run("verify", str(tmp_path / "plain"), capsys=capsys)
    assert code == 2 and "not a coterie write-ahead log" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["waltool", "range", str(tmp_path / "log"), "ten", "20"])
    assert exit_info.value.code == 2
    assert "FROM must be an index, got 'ten'" in capsys.readouterr().err
    code, _out, err = run(
        "compact", str(tmp_path / "log"), "--purge-deletes-older-than", "7 days", capsys=capsys
    )
    assert code == 2 and "--purge-deletes-older-than: '7 days' is not a duration" in err
    with SegmentedLog.open(tmp_path / "log"):
        code, _out, err = run("compact", str(tmp_path / "log"), capsys=capsys)
    assert code == 2 and "stop the node first" in err
    code, _out, err = run("compact", str(tmp_path / "log"), "--through", "500", capsys=capsys)
    assert code == 2 and "--through 500: the log ends at 120" in err


def test_a_corrupt_log_exits_1_naming_the_file(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_log(tmp_path / "log")
    second = segment_files(tmp_path / "log")[1]
    flip_byte(second, HEADER_SIZE + 40)
    code, _out, err = run("range", str(tmp_path / "log"), "1", "200", capsys=capsys)
    assert code == 1 and str(second) in err and "offset" in err


def test_durations() -> None:
    assert parse_duration("500ms", "--x") == 500
    assert parse_duration("30s", "--x") == 30_000
    assert parse_duration("15m", "--x") == 900_000
    assert parse_duration("12h", "--x") == 43_200_000
    assert parse_duration("7d", "--x") == 7 * DAY
    for bad in ("", "7", "d", "-1d", "1.5h", "7w"):
        with pytest.raises(CliError, match="--x"):
            parse_duration(bad, "--x")


def test_entry_json_keeps_unicode_and_escapes_controls() -> None:
    text = json.loads(entry_json(Entry(1, 1, EntryKind.CONFIGURATION, 5, "héllo\n".encode())))
    assert text["payload"] == "héllo\n" and text["kind"] == "configuration"
    raw = json.loads(entry_json(Entry(2, 1, 77, 5, b"\x1b[2J")))
    assert raw["encoding"] == "base64" and raw["kind"] == 77


def test_compact_purges_old_tombstones(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "log"
    with SegmentedLog.open(directory, segment_size=1024) as log:
        index = 0
        for n in range(60):
            index += 1
            payload = encode_put(f"k{n % 6}", b"x" * 20)
            log.append([Entry(index, 1, 0, NOW_MS - 30 * DAY, payload)])
        for n in range(6):
            index += 1
            log.append([Entry(index, 1, 0, NOW_MS - 10 * DAY, encode_delete(f"k{n}"))])
        for n in range(40):
            index += 1
            log.append([Entry(index, 1, 0, NOW_MS, encode_put("live", b"%d" % n))])
    monkeypatch.setattr("time.time", lambda: NOW_MS / 1000)
    code, out, _err = run(
        "compact", str(directory), "--purge-deletes-older-than", "7d", capsys=capsys
    )
    assert code == 0 and "tombstones" in out
    with SegmentedLog.open(directory, readonly=True) as log:
        survivors = list(log.read_range(1, log.last_index + 1))
    assert len(survivors) < 30
    deletes = [e for e in survivors if msgpack_kv_key(e.payload)[1]]
    assert len(deletes) < 6
    for tombstone in deletes:  # kept only behind an older value pinned at a segment's end
        key = msgpack_kv_key(tombstone.payload)[0]
        older = [e for e in survivors if e.index < tombstone.index]
        assert any(msgpack_kv_key(e.payload)[0] == key for e in older)
    code, out, _err = run("verify", str(directory), capsys=capsys)
    assert code == 0


def test_diff_finds_a_planted_gap_and_a_changed_entry(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    build_log(a)
    shutil.copytree(a, b)
    code, out, _err = run("diff", str(a), str(b), capsys=capsys)
    assert code == 0 and "identical from index 1 to 120" in out
    missing = segment_files(b)[2]  # node B lost a whole segment of events
    first, last = int(missing.stem), int(segment_files(b)[3].stem) - 1
    missing.unlink()
    missing.with_suffix(".idx").unlink()
    with SegmentedLog.open(a) as log:  # and node A got three more entries
        log.append(make_entries(121, 3, term=3))
    code, out, err = run("diff", str(a), str(b), capsys=capsys)
    assert code == 1
    assert f"only in A: {first}..{last} ({last - first + 1} entries missing in B)" in out
    assert "only in A: 121..123 (3 entries missing in A)" not in out
    assert "only in A: 121..123 (3 entries missing in B)" in out
    assert f"entries {first}..{last} are missing" in err  # B's gap was noticed on open
    # Same index, different entry.
    c = tmp_path / "c"
    shutil.copytree(a, c)
    with SegmentedLog.open(c) as log:
        log.truncate_after(122)
        log.append([Entry(123, 4, 0, 0, b"rewritten")])
    code, out, _err = run("diff", str(a), str(c), capsys=capsys)
    assert code == 1 and "differ at 123: A term 3" in out and "B term 4" in out


def test_the_console_entry_point_runs_waltool(tmp_path: pathlib.Path) -> None:
    build_log(tmp_path / "log")
    flip_byte(segment_files(tmp_path / "log")[0], HEADER_SIZE + 3)
    ok = subprocess.run(
        [sys.executable, "-m", "coterie", "waltool", "verify", str(tmp_path / "log")],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 1 and "problem:" in ok.stdout and ok.stderr == ""
    bad = subprocess.run(
        [sys.executable, "-m", "coterie", "waltool", "compact", str(tmp_path / "log"),
         "--purge-deletes-older-than", "soon"],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().endswith("use a number and a unit: 500ms, 30s, 15m, 12h or 7d")


class FakeTerminal:
    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.written: list[str] = []

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> None:
        self.written.append(text)

    def flush(self) -> None:
        pass


def test_progress_bar_only_on_a_terminal() -> None:
    quiet = FakeTerminal(tty=False)
    with _Progress("verify", quiet) as bar:
        bar.update(5, 10)
    assert quiet.written == []
    loud = FakeTerminal(tty=True)
    with _Progress("verify", loud) as bar:
        bar.update(5, 10)
        bar.update(6, 10)  # within 0.1 s: not redrawn
        bar.update(10, 10)  # the end is always drawn
    drawn = [w for w in loud.written if "[" in w]
    assert len(drawn) == 2 and "50.0%" in drawn[0] and "100.0%" in drawn[1]
    assert loud.written[-1].endswith("\r")  # the bar is wiped at the end


def test_compact_leaves_the_open_segment_out_unless_told(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Entries in the open segment may be an uncommitted tail that Raft may still truncate:
    by default they do not count as newer."""
    directory = tmp_path / "log"
    with SegmentedLog.open(directory, segment_size=1024) as log:
        for index in range(1, 41):
            log.append([Entry(index, 1, 0, 0, encode_put(f"k{index}", b"v" * 30))])
        last_sealed = log.segments()[-2].last_index
        log.append([Entry(41, 1, 0, 0, encode_put("k1", b"newer"))])  # lands in the open one
        assert log.segments()[-1].first_index <= 41
    code, out, _err = run("compact", str(directory), capsys=capsys)
    assert code == 0 and "removed 0 entries" in out
    code, out, _err = run("compact", str(directory), "--through", "41", capsys=capsys)
    assert code == 0 and "removed 1 entries" in out
    with SegmentedLog.open(directory, readonly=True) as log:
        assert log.get(1) is None and log.get(41) is not None and last_sealed >= 1
