"""Bad input: one clear line naming the file (and line), exit code 2, no partial output."""

from __future__ import annotations

import gzip
import shutil

import pytest

from seqkd.cli.main import main


def _run(capsys, *argv) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("seqkd: error:") and "\n" not in err, err
    return err


def test_translate_invalid_utf8(tmp_path, capsys, tiny_reverse):
    model_dir = tiny_reverse[0]
    bad = tmp_path / "in.txt"
    bad.write_bytes(b"1 2 3\n4 5\n\xff\xfe 6\n")
    out = tmp_path / "out.txt"
    err = _run(capsys, "translate", "--model", str(model_dir), "-i", str(bad), "-o", str(out))
    assert "in.txt:3:" in err and "UTF-8" in err
    assert not out.exists()


def test_evaluate_misaligned(tmp_path, capsys, tiny_reverse):
    (tmp_path / "s.txt").write_text("1 2\n3 4\n5 6\n")
    (tmp_path / "r.txt").write_text("2 1\n4 3\n")
    out = tmp_path / "scores.json"
    err = _run(capsys, "evaluate", "--model", str(tiny_reverse[0]), "--source", str(tmp_path / "s.txt"),
               "--reference", str(tmp_path / "r.txt"), "--out", str(out))
    assert "s.txt has 3 lines" in err and "r.txt has 2" in err
    assert not out.exists()


def test_missing_file_and_missing_model(tmp_path, capsys, tiny_reverse):
    err = _run(capsys, "translate", "--model", str(tiny_reverse[0]), "-i", str(tmp_path / "nope.txt"),
               "-o", str(tmp_path / "o.txt"))
    assert "nope.txt" in err and "not found" in err
    (tmp_path / "x").write_text("1 2\n")
    err = _run(capsys, "translate", "--model", str(tmp_path / "nomodel"), "-i", str(tmp_path / "x"))
    assert "nomodel" in err
    assert not (tmp_path / "o.txt").exists()


def test_corrupt_model_weights(tmp_path, capsys, tiny_reverse):
    model = tmp_path / "model"
    shutil.copytree(tiny_reverse[0], model, ignore=shutil.ignore_patterns("ct2*", "checkpoints"))
    (model / "model.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "in.txt").write_text("1 2 3\n")
    for engine in ("hf", "ct2"):
        err = _run(capsys, "translate", "--model", str(model), "--engine", engine, "-i", str(tmp_path / "in.txt"),
                   "-o", str(tmp_path / "o.txt"))
        assert "model" in err
    assert not (tmp_path / "o.txt").exists()


def test_checksum_mismatch_in_data_dir(tmp_path, capsys, multi30k_dir):
    d = tmp_path / "data"
    d.mkdir()
    for f in multi30k_dir.glob("*.gz"):
        shutil.copy(f, d / f.name)
    with gzip.open(d / "val.en.gz", "at") as f:
        f.write("tampered\n")
    err = _run(capsys, "evaluate", "--model", "unused", "--data-dir", str(d), "--split", "val")
    assert "val.en.gz" in err and "sha256" in err


def test_train_misaligned_files_no_output(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("a\nb\nc\n")
    (tmp_path / "b.txt").write_text("a\nb\n")
    out = tmp_path / "run"
    err = _run(capsys, "train", "--size", "tiny", "--out", str(out), "--set", f"data.train_src={tmp_path / 'a.txt'}",
               "--set", f"data.train_tgt={tmp_path / 'b.txt'}")
    assert "a.txt has 3 lines" in err
    assert not (out / "model.safetensors").exists()


def test_corrupt_checkpoint(tmp_path, capsys, multi30k_dir):
    from seqkd.util.fsutil import write_json

    out = tmp_path / "run"
    ck = out / "checkpoints" / "step-5"
    ck.mkdir(parents=True)
    (ck / "model.safetensors").write_bytes(b"garbage")
    (ck / "optim.safetensors").write_bytes(b"garbage")
    write_json(ck / "state.json", {"step": 5})
    write_json(out / "checkpoints" / "latest.json", {"dir": "step-5", "step": 5})
    err = _run(capsys, "train", "--size", "tiny", "--out", str(out), "--data-dir", str(multi30k_dir),
               "--set", "data.max_train_pairs=300", "--set", "vocab.size=300")
    assert "step-5" in err and "corrupt checkpoint" in err
    (out / "checkpoints" / "latest.json").write_text('{"dir": "st')  # a torn pointer: named, not a traceback
    err = _run(capsys, "train", "--size", "tiny", "--out", str(out), "--data-dir", str(multi30k_dir),
               "--set", "data.max_train_pairs=300", "--set", "vocab.size=300")
    assert f"{out / 'checkpoints' / 'latest.json'}: not a readable JSON file" in err


@pytest.mark.parametrize("argv", [[], ["vocab"], ["train"], ["distill"], ["prune"], ["shrink"], ["stack"], ["export"],
                                  ["reproduce"], ["translate"], ["evaluate"], ["bench"], ["shortlist"],
                                  ["tune-decode"]])
def test_help_on_every_command(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv + ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: seqkd" in out
    if argv:  # every command computes something: each takes --quiet and --threads
        assert "--quiet" in out and "--threads" in out, argv


def test_bad_prune_schedule_and_shrink_layers(tmp_path, capsys, tiny_reverse):
    model = str(tiny_reverse[0])
    err = _run(capsys, "prune", "--model", model, "--sparsity", "0.8", "--schedule", "0.5,x", "--epochs", "0",
               "--out", str(tmp_path / "p"))
    assert "--schedule" in err
    err = _run(capsys, "prune", "--model", model, "--sparsity", "0.8", "--schedule", "0.9,0.8", "--epochs", "0",
               "--out", str(tmp_path / "p"))
    assert "must increase and end at the sparsity 0.8" in err
    err = _run(capsys, "shrink", "--model", model, "--keep-decoder-layers", "5", "--out", str(tmp_path / "s"))
    assert "decoder layers to keep [5]" in err
    assert not (tmp_path / "s").exists()
    err = _run(capsys, "stack", "--model", model, "--encoder-layers", "1", "--decoder-layers", "2",
               "--out", str(tmp_path / "g"))
    assert "cannot stack 2+2 layers into 1+2" in err
    assert not (tmp_path / "g").exists()


def test_second_writer_of_a_run_folder_is_refused(tmp_path, capsys):
    """Two `seqkd reproduce` (or training runs) on one folder at once: the second stops with one line
    naming the holder; once the first is gone (even killed), the folder is free again."""
    import subprocess
    import sys

    from seqkd.util.fsutil import SeqkdError, folder_lock

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom seqkd.util.fsutil import folder_lock\n"
                               f"with folder_lock({str(out)!r}, 'x'):\n    print('held', flush=True)\n"
                               "    time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        # no corpus needed: the lock is taken before any data is read (this data folder does not exist)
        err = _run(capsys, "reproduce", "--preset", "tiny", "--data-dir", str(tmp_path / "no-data"), "--out", str(out))
        assert "another seqkd reproduce is writing this folder" in err and str(holder.pid) in err
        assert not (out / "vocab").exists()
        with pytest.raises(SeqkdError, match="another training run"):
            with folder_lock(out, "training run"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(out, "training run"):  # released by the kill
        pass
