"""Security basics (issue 12 part 4), each claim checked so that the test can fail:

1. no pickle: an `ast` scan of seqkd/ and benchmarks/ (and a check that the scan flags each
   forbidden pattern);
3. downloads only over https, verified against sha256 (a fake `urlopen`, no network);
4. a bug is a traceback with exit 1, a user error one `seqkd: error:` line with exit 2.

Part 2 (weights only from safetensors, the narrowed `except` blocks) is tests/test_security_weights.py.
"""
from __future__ import annotations

import ast
import gzip
import hashlib
import io
import os
import re
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from seqkd.data import corpus
from seqkd.util.fsutil import SeqkdError

ROOT = Path(__file__).resolve().parents[1]

# --- 1 static scan ----------------------------------------------------------------------------------
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle", "shelve"}
UNSAFE_CALLS = {"yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all",
                "pandas.read_pickle"}
TORCH_LOADS = {"torch.load", "torch.serialization.load"}
YAML_LOADS = {"yaml.load", "yaml.load_all"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader"}


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted name it was imported as (`import numpy as np`: np -> numpy)."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """`np.load` -> "numpy.load" (through the imports); None for anything but a dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _arg(call: ast.Call, keyword: str, position: int) -> ast.AST | None:
    """The argument given as `keyword=` or at `position`, else None."""
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return call.args[position] if len(call.args) > position else None


def _is_const(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _import_findings(node: ast.AST) -> list[str]:
    """`import pickle`, `from dill import loads`, ..."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        names = [node.module or ""]
    else:
        return []
    return [f"imports {n}" for n in names if n.split(".")[0] in PICKLE_MODULES]


def _safe_loaders(tree: ast.AST, aliases: dict[str, str]) -> set[str]:
    """SafeLoader, CSafeLoader and the module's own subclasses of them (e.g. config._Loader)."""
    safe = set(SAFE_YAML_LOADERS)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
                (_dotted(b, aliases) or "").rsplit(".", 1)[-1] in SAFE_YAML_LOADERS for b in node.bases):
            safe.add(node.name)
    return safe


def _call_finding(call: ast.Call, aliases: dict[str, str], safe_loaders: set[str] = SAFE_YAML_LOADERS) -> str | None:
    """What is unsafe about one call, or None."""
    name = _dotted(call.func, aliases)
    if name is None:
        return None
    if isinstance(call.func, ast.Name) and name in ("eval", "exec") or name in ("builtins.eval", "builtins.exec"):
        return f"calls {name}()"
    if name.split(".")[0] in PICKLE_MODULES or name in UNSAFE_CALLS:
        return f"calls {name}"
    if name in TORCH_LOADS and not _is_const(_arg(call, "weights_only", 99), True):
        return f"calls {name} without weights_only=True"
    if name == "numpy.load" and not (_arg(call, "allow_pickle", 2) is None or _is_const(_arg(call, "allow_pickle", 2),
                                                                                        False)):
        return "calls numpy.load with allow_pickle"
    if name in YAML_LOADS:
        loader = _dotted(_arg(call, "Loader", 1) or ast.Constant(None), aliases) or ""
        if loader.rsplit(".", 1)[-1] not in safe_loaders:
            return f"calls {name} without SafeLoader"
    if name in ("__import__", "importlib.import_module"):
        mod = _arg(call, "name", 0)
        if isinstance(mod, ast.Constant) and str(mod.value).split(".")[0] in PICKLE_MODULES:
            return f"imports {mod.value} dynamically"
    return None


def unsafe_patterns(source: str, filename: str = "<string>") -> list[str]:
    """`file:line: what` for every pickle import, unpickling or code-executing call in `source`."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    safe_loaders = _safe_loaders(tree, aliases)
    found = []
    for node in ast.walk(tree):
        what = _import_findings(node)
        if isinstance(node, ast.Call):
            what += [w for w in [_call_finding(node, aliases, safe_loaders)] if w]
        found += [f"{filename}:{node.lineno}: {w}" for w in what]
    return found


def scanned_files() -> list[Path]:
    return sorted((ROOT / "seqkd").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))


def test_no_pickle_or_eval_in_seqkd_and_benchmarks():
    """The package and the benchmarks never unpickle, never eval/exec."""
    files = scanned_files()
    assert ROOT / "seqkd" / "data" / "corpus.py" in files and any(f.parent.name == "benchmarks" for f in files)
    found = [hit for f in files for hit in unsafe_patterns(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))]
    assert found == []


FORBIDDEN = {
    "import pickle": "import pickle\n",
    "import cPickle": "import cPickle as p\n",
    "from dill": "from dill import loads\n",
    "import joblib": "import joblib\n",
    "pickle.loads via alias": "import pickle as pk\nx = pk.loads(b'')\n",
    "torch.load": "import torch\nsd = torch.load('m.bin')\n",
    "torch.load weights_only=False": "import torch\nsd = torch.load('m.bin', weights_only=False)\n",
    "torch.load aliased": "from torch import load as tl\nsd = tl('m.bin', map_location='cpu')\n",
    "torch.load **kwargs": "import torch\nkw = {'weights_only': True}\nsd = torch.load('m.bin', **kw)\n",
    "numpy allow_pickle": "import numpy as np\na = np.load('a.npy', allow_pickle=True)\n",
    "numpy allow_pickle positional": "import numpy as np\na = np.load('a.npy', None, True)\n",
    "yaml.load": "import yaml\nc = yaml.load(open('c.yaml'))\n",
    "yaml.load FullLoader": "import yaml\nc = yaml.load(s, Loader=yaml.FullLoader)\n",
    "yaml.load own unsafe Loader": "import yaml\nclass L(yaml.Loader):\n    pass\nc = yaml.load(s, Loader=L)\n",
    "yaml.unsafe_load": "import yaml\nc = yaml.unsafe_load(s)\n",
    "eval": "x = eval('1 + 1')\n",
    "exec": "exec('x = 1')\n",
    "__import__ pickle": "m = __import__('pickle')\n",
}


@pytest.mark.parametrize("source", FORBIDDEN.values(), ids=FORBIDDEN.keys())
def test_scan_flags_each_forbidden_pattern(source):
    """The scan is not vacuous: each forbidden pattern, alone in a snippet, is reported."""
    assert unsafe_patterns(source), source


def test_scan_passes_safe_code():
    """Comments, strings, `.eval()` methods and the safe forms of each loader are not flagged."""
    source = textwrap.dedent('''
        # pickle.load(f) and torch.load(x) in a comment; eval("1") too
        import numpy as np
        import torch
        import yaml
        DOC = "import pickle; pickle.loads(b'')"
        model = object()
        model.eval()
        sd = torch.load("m.pt", weights_only=True, map_location="cpu")
        a, b = np.load("a.npy"), np.load("b.npy", allow_pickle=False)
        c, d = yaml.safe_load("x: 1"), yaml.load("x: 1", Loader=yaml.SafeLoader)
        e = yaml.load("x: 1", yaml.CSafeLoader)
        class Strict(yaml.SafeLoader):
            pass
        f = yaml.load("x: 1", Loader=Strict)
    ''')
    assert unsafe_patterns(source) == []


# --- 3 downloads: https only, sha256 verified ------------------------------------------------------------
class FakeResponse(io.BytesIO):
    """What urlopen returns: readable, a context manager, and it knows the URL it ended at."""

    def __init__(self, data: bytes, final_url: str):
        super().__init__(data)
        self.final_url = final_url

    def geturl(self) -> str:
        return self.final_url


@pytest.fixture
def fake_urlopen(monkeypatch):
    """Replace urllib's urlopen (no network): `serve(data, final_url=None)` sets what it returns;
    the returned list records every URL opened."""
    opened: list[str] = []
    served = {"data": b"", "final": None}

    def urlopen(url, timeout=None):
        opened.append(url)
        return FakeResponse(served["data"], served["final"] or url)

    def serve(data: bytes, final_url: str | None = None) -> list[str]:
        served.update(data=data, final=final_url)
        return opened

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.delenv("SEQKD_DATA", raising=False)
    return serve


def test_corpus_table_is_https_and_pinned():
    """Every corpus URL is https; every pinned sum is 64 hex digits for a file the table serves, and
    the de-en files of the default runs (train, val, test_2016_flickr) are all pinned."""
    served = {f"{split}.{lang}.gz" for split, langs in corpus.MULTI30K_SPLITS.items() for lang in langs}
    for name in served:
        split, lang, _ = name.split(".")
        url = corpus.MULTI30K_URL.format(split=split, lang=lang)
        assert url.startswith("https://"), url
        corpus.require_https(url)
    for name, digest in corpus.MULTI30K_SHA256.items():
        assert name in served and re.fullmatch(r"[0-9a-f]{64}", digest), (name, digest)
    for split in ("train", "val", "test_2016_flickr"):
        assert {f"{split}.de.gz", f"{split}.en.gz"} <= set(corpus.MULTI30K_SHA256)


@pytest.mark.parametrize("url", ["http://example.org/val.de.gz", "file:///etc/passwd", "ftp://example.org/val.de.gz",
                                 "https:///no-host.gz", "val.de.gz"])
def test_non_https_download_refused_before_opening(tmp_path, fake_urlopen, url):
    opened = fake_urlopen(gzip.compress(b"x\n"))
    cache = tmp_path / "cache"
    for download in (lambda: corpus._download(url, "val.de.gz", cache, None), lambda: corpus._fetch(url, cache)):
        with pytest.raises(SeqkdError) as e:
            download()
        assert str(e.value) == f"refusing to download {url}: only https URLs are allowed"
    assert opened == [] and not cache.exists()


def test_checksum_mismatch_discarded(tmp_path, fake_urlopen):
    """A download whose bytes are not the pinned ones: one-line error, nothing under the final name,
    no partial file left in the cache."""
    opened = fake_urlopen(gzip.compress(b"not the real val.de\n"))
    cache = tmp_path / "cache"
    with pytest.raises(SeqkdError) as e:
        corpus.corpus_files("multi30k", "val", "de", "en", cache_dir=cache)
    msg = str(e.value)
    assert "sha256 mismatch" in msg and "val.de.gz" in msg and "discarded" in msg and "\n" not in msg
    assert opened == [corpus.MULTI30K_URL.format(split="val", lang="de")]
    assert list(cache.iterdir()) == []


def test_matching_download_lands(tmp_path, fake_urlopen):
    """Control: the same fake delivers a file when its sha256 matches (so the refusals above are real)."""
    data = gzip.compress(b"ein Satz\n")
    fake_urlopen(data)
    cache = tmp_path / "cache"
    path = corpus._download("https://example.org/x.gz", "x.gz", cache, hashlib.sha256(data).hexdigest())
    assert path == cache / "x.gz" and path.read_bytes() == data
    assert [p.name for p in cache.iterdir()] == ["x.gz"]


def test_redirect_to_http_refused(tmp_path, fake_urlopen):
    url = "https://example.org/x.gz"
    fake_urlopen(gzip.compress(b"x\n"), final_url="http://example.org/x.gz")
    cache = tmp_path / "cache"
    with pytest.raises(SeqkdError, match=r"^refusing to download http://example.org/x.gz \(redirected from https"):
        corpus._download(url, "x.gz", cache, None)
    assert list(cache.iterdir()) == []


# --- 4 exit codes --------------------------------------------------------------------------------------
# `python -m seqkd ARGS`, after replacing seqkd.data.corpus.read_parallel (which `seqkd shortlist` calls
# first) by one that raises the exception named in $SEQKD_INJECT.
INJECT = textwrap.dedent("""
    import os, runpy, sys
    import seqkd.data.corpus
    from seqkd.util.fsutil import SeqkdError
    exc = {"TypeError": TypeError, "AttributeError": AttributeError, "SeqkdError": SeqkdError}
    exc = exc[os.environ["SEQKD_INJECT"]]
    def read_parallel(*args, **kwargs):
        raise exc("injected failure")
    seqkd.data.corpus.read_parallel = read_parallel
    sys.argv = ["seqkd", *sys.argv[1:]]
    runpy.run_module("seqkd", run_name="__main__", alter_sys=True)
""")


def run_seqkd(args: list[str], inject: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `python -m seqkd ARGS` (with an injected failure: through the INJECT wrapper)."""
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "seqkd", *args]
    if inject:
        env["SEQKD_INJECT"] = inject
        cmd = [sys.executable, "-c", INJECT, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def shortlist_args(tmp_path: Path) -> list[str]:
    return ["shortlist", "--distilled", str(tmp_path / "no-such-corpus"), "--vocab", str(tmp_path),
            "--out", str(tmp_path / "vmap.txt")]


@pytest.mark.parametrize("bug", ["TypeError", "AttributeError"])
def test_a_bug_is_a_traceback_with_exit_1(tmp_path, bug):
    res = run_seqkd(shortlist_args(tmp_path), inject=bug)
    assert res.returncode == 1, res.stderr
    assert "Traceback (most recent call last)" in res.stderr and f"{bug}: injected failure" in res.stderr
    assert "seqkd: error" not in res.stderr
    assert not (tmp_path / "vmap.txt").exists()


def test_an_injected_seqkd_error_is_one_line_exit_2(tmp_path):
    res = run_seqkd(shortlist_args(tmp_path), inject="SeqkdError")
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines() == ["seqkd: error: injected failure"]


def test_a_user_error_is_one_line_exit_2(tmp_path):
    """The real thing, no injection: `python -m seqkd shortlist` on a corpus folder that does not exist."""
    res = run_seqkd(shortlist_args(tmp_path))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqkd: error: "), res.stderr
    assert str(tmp_path / "no-such-corpus" / "train.src") in lines[0] and "file not found" in lines[0]
    assert "Traceback" not in res.stderr and not (tmp_path / "vmap.txt").exists()
