"""The int8 (or other quantization) CTranslate2 export of a model folder, with its sizes on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

from seqkd.data.vocab import TOKENIZER_FILES
from seqkd.inference.decode import ct2_dir
from seqkd.util import faults
from seqkd.util.fsutil import SeqkdError, check_new_folder, finish_folder, write_json


def export_ct2(model_dir: str | Path, out: str | Path, quantization: str = "int8", vmap: str | None = None) -> dict:
    """Copy the CTranslate2 conversion (int8 by default; with `vmap`, carrying that shortlist as
    vmap.txt) and the tokenizer into `out`; report sizes."""
    model_dir, out = Path(model_dir), Path(out)
    if not model_dir.is_dir():
        raise SeqkdError(f"{model_dir}: model folder does not exist")
    check_new_folder(out)  # a file in the way or a parent we cannot write: one line, before any work
    conv = ct2_dir(model_dir, None if quantization == "float32" else quantization, vmap)
    fp32 = ct2_dir(model_dir, None)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(conv, tmp)
    for name in TOKENIZER_FILES:
        shutil.copy(model_dir / name, tmp / name)
    mb = 1024 * 1024
    report = {"quantization": quantization, "vmap": (tmp / "vmap.txt").exists(),
              "hf_safetensors_mb": (model_dir / "model.safetensors").stat().st_size / mb,
              "ct2_float32_mb": (fp32 / "model.bin").stat().st_size / mb,
              f"ct2_{quantization}_mb": (tmp / "model.bin").stat().st_size / mb}
    write_json(tmp / "export.json", report)  # inside the folder before it gets its name: all or nothing
    finish_folder(tmp)
    faults.point("export_copy")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return report
