"""Greedy / beam / n-best translation with scores, one API over two engines.

Engines: CTranslate2 ("ct2", default: converts the HF folder once and caches the conversion beside
it) and Hugging Face `generate` ("hf"). Both see the same batches (sorted by length, bounded by a
token budget) and the same maximum length, `max_len_a * longest source + max_len_b` per batch.

Long inputs: a model has no positions past its `max_position_embeddings` (512 for every seqkd size), so
a source longer than that is cut to it (its `</s>` kept) and a decode limit above it is capped at it;
both are counted in a warning ("3 of 1000 sources longer than 512 tokens ... were truncated"), never a
crash and never a silent cut. `Translator.score` cuts sources and targets the same way.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from seqkd.data.batching import IGNORE, collate, pad, token_batches
from seqkd.data.vocab import TOKENIZER_FILES, Vocab
from seqkd.inference.shortlist import file_hash
from seqkd.models.marian import MODEL_LOAD_ERRORS, check_model_folder, load_model, log_probs, training_logits
from seqkd.util import faults
from seqkd.util.fsutil import SeqkdError, atomic_open, finish_folder, is_no_space, locked, no_space, read_json

log = logging.getLogger(__name__)


@dataclass
class DecodeConfig:
    engine: str = "ct2"  # ct2 | hf
    beam: int = 5
    nbest: int = 1
    max_len_a: float = 1.5
    max_len_b: int = 10
    max_tokens: int = 4096  # source tokens per batch
    compute_type: str = "float32"  # ct2: float32 | int8 | int8_float32 | ...
    length_penalty: float = 1.0
    threads: int = 0  # 0 = torch's default; CTranslate2: inter_threads x intra_threads = threads
    device: str = "cpu"  # cpu | cuda (CTranslate2 and HF)
    device_index: int = 0  # CTranslate2 on cuda: which GPU (HF: give device "cuda:N")
    # CTranslate2 speed settings (docs/RESULTS.md measures them)
    inter_threads: int = 1  # batches decoded in parallel, each with threads // inter_threads threads
    # (seqkd's own batches, submitted asynchronously: the same batches and length limits as 1 x threads)
    engine_batching: bool = False  # hand CTranslate2 all lines at once: it sorts and splits them itself
    # (then the length limit is max_len_a x the longest source of all lines + max_len_b, not per batch)
    max_batch_size: int = 0  # with engine_batching: the batch size (0 = max_tokens) ...
    batch_type: str = "tokens"  # ... counted in "tokens" or "examples"
    return_scores: bool = True  # False skips the final softmax in greedy search (scores are then 0)
    vmap: str | None = None  # a vocabulary map (`seqkd shortlist`): decode with CTranslate2's use_vmap


@dataclass
class Hypothesis:
    text: str
    pieces: list[str]
    score: float  # mean token log-probability (including </s>), CTranslate2's convention


def ct2_dir(model_dir: str | Path, quantization: str | None = None, vmap: str | Path | None = None) -> Path:
    """The CTranslate2 conversion of a HF folder, made once and cached (re-made when the weights change).

    With `vmap`, the conversion carries that vocabulary map (its own cached folder, keyed by the
    map's content)."""
    model_dir = Path(model_dir)
    name = "ct2" if quantization in (None, "float32") else f"ct2-{quantization}"
    weights = model_dir / "model.safetensors"
    if not weights.exists():
        raise SeqkdError(f"{weights}: weights not found")
    st = weights.stat()
    stamp = f"{st.st_size}:{st.st_mtime_ns}"
    if vmap is not None:
        if not Path(vmap).exists():
            raise SeqkdError(f"{vmap}: vocabulary map not found")
        name += f"-vmap-{file_hash(vmap)[:8]}"  # one cached conversion per shortlist content
    out = model_dir / name
    if (out / "seqkd_stamp.txt").exists() and (out / "seqkd_stamp.txt").read_text() == stamp:
        return out
    try:
        lock = locked(model_dir / f".{name}.lock")
        lock.__enter__()
    except OSError as e:
        raise SeqkdError(f"{model_dir}: cannot write the CTranslate2 conversion here ({e.strerror or e})") from None
    try:  # one process converts; the others wait and find it done
        if (out / "seqkd_stamp.txt").exists() and (out / "seqkd_stamp.txt").read_text() == stamp:
            return out
        for stale in model_dir.glob(f".{name}.*"):  # left by a killed conversion (we hold the lock)
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        _convert(model_dir, name, quantization, vmap, stamp)
    finally:
        lock.__exit__(None, None, None)
    return out


def _convert(model_dir: Path, name: str, quantization: str | None, vmap: str | Path | None, stamp: str) -> None:
    """Convert into a temp folder beside `model_dir / name`, then rename it into place."""
    check_model_folder(model_dir)  # another architecture or a non-object config: AttributeError in the converter
    for f in TOKENIZER_FILES:  # a missing one is a TypeError in the converter
        if not (model_dir / f).exists():
            raise SeqkdError(f"{model_dir / f}: tokenizer file not found (need {', '.join(TOKENIZER_FILES)})")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=model_dir))
    try:
        _safetensors_converter(model_dir).convert(str(tmp / "m"), quantization=quantization, force=True,
                                                  vmap=str(vmap) if vmap is not None else None)
        (tmp / "m" / "seqkd_stamp.txt").write_text(stamp)
        finish_folder(tmp / "m")
        faults.point("ct2_convert")
        out = model_dir / name
        if out.exists():
            shutil.rmtree(out)
        (tmp / "m").rename(out)
    except MODEL_LOAD_ERRORS as e:  # a corrupt folder (or a failed write); anything else is a bug
        if is_no_space(e):
            raise no_space(tmp) from None
        raise SeqkdError(f"{model_dir}: CTranslate2 conversion failed ({type(e).__name__}: {e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _safetensors_converter(model_dir: Path):
    """CTranslate2's Transformers converter, loading model.safetensors only (its own loader would
    fall back to pytorch_model.bin, a pickle, when there is no safetensors file) and refusing a file
    that lacks weights (they would be converted as initialised at random)."""
    from ctranslate2.converters import TransformersConverter

    class SafetensorsConverter(TransformersConverter):
        def load_model(self, model_class, model_name_or_path, **kwargs):
            kwargs |= {"use_safetensors": True, "output_loading_info": True}
            model, info = super().load_model(model_class, model_name_or_path, **kwargs)
            if missing := sorted(info["missing_keys"]):  # the converter would convert them as initialised at random
                raise SeqkdError(f"{model_dir / 'model.safetensors'}: {len(missing)} weights missing "
                                 f"(e.g. {missing[0]}); not a complete model for its config.json")
            return model

    return SafetensorsConverter(str(model_dir))


def fit_positions(seqs: list[list[str]], limit: int, end: tuple[str, ...] = ()) -> tuple[list[list[str]], int]:
    """`seqs` with each one longer than `limit` tokens cut to `limit`, ending with `end` (a source keeps its
    `</s>`), and how many were cut."""
    cut = sum(len(s) > limit for s in seqs)
    keep = limit - len(end)
    return ([s[:keep] + list(end) if len(s) > limit else s for s in seqs] if cut else seqs), cut


def _by_length(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Batches of line indices sorted by length, rows x longest <= max_tokens."""
    return token_batches(lengths, lengths, max_tokens)


class Translator:
    """Translate detokenized lines with a HF Marian folder through CTranslate2 or `generate`."""

    def __init__(self, model_dir: str | Path, cfg: DecodeConfig | None = None):
        self.cfg = cfg or DecodeConfig()
        self.model_dir = Path(model_dir)
        self.vocab = Vocab(self.model_dir)
        threads = self.cfg.threads or torch.get_num_threads()
        if self.cfg.engine == "ct2":
            import ctranslate2

            quant = "int8" if self.cfg.compute_type.startswith("int8") else None
            path = ct2_dir(self.model_dir, quant, self.cfg.vmap)
            inter = max(1, min(self.cfg.inter_threads, threads))
            self._inter = inter
            self._engine_batching = self.cfg.engine_batching
            self.ct2 = ctranslate2.Translator(str(path), device=self.cfg.device, device_index=self.cfg.device_index,
                                              compute_type=self.cfg.compute_type,
                                              inter_threads=inter, intra_threads=max(1, threads // inter))
        elif self.cfg.engine == "hf":
            self.model = load_model(self.model_dir)
            self.model.to(self.cfg.device).eval()
            # `<pad>` is never an output: without this, `generate` normalises beam scores over it too
            # (it suppresses the token only after the log-softmax), 4-8e-3 per token below forced scores
            with torch.no_grad():
                self.model.final_logits_bias[..., self.vocab.pad_id] = float("-inf")
        else:
            raise SeqkdError(f"unknown engine {self.cfg.engine!r} (ct2 or hf)")
        self.max_positions = int(read_json(self.model_dir / "config.json").get("max_position_embeddings", 512))
        self._warned: set[str] = set()

    def translate(self, lines: list[str], beam: int | None = None, nbest: int | None = None,
                  progress: bool = False) -> list[list[Hypothesis]]:
        """One list of `nbest` hypotheses (best first) per input line, in input order.

        Empty lines translate to an empty hypothesis, so output stays aligned with input.
        """
        beam = beam or self.cfg.beam
        nbest = nbest or self.cfg.nbest
        if nbest > beam:
            raise SeqkdError(f"nbest ({nbest}) cannot exceed the beam size ({beam})")
        pieces = self._fit(self.vocab.src_pieces(lines), "sources", self.max_positions, ("</s>",))
        results: list[list[Hypothesis] | None] = [None] * len(lines)
        batches = _by_length([len(p) for p in pieces], max(self.cfg.max_tokens // max(1, beam // 4), 64))
        if self.cfg.engine == "ct2" and self._engine_batching:
            batches = [list(range(len(lines)))] if lines else []
        bar = tqdm(total=len(lines), desc=f"translate ({self.cfg.engine}, beam {beam})", unit="sent",
                   disable=not progress, leave=False)
        parallel = self.cfg.engine == "ct2" and self._inter > 1 and not self._engine_batching
        pending = []  # (indices, asynchronous results) while batches run in parallel
        for idx, max_len in zip(batches, self._limits(pieces, batches)):
            src = [pieces[i] for i in idx]
            if parallel:  # queue every batch; CTranslate2 runs inter_threads of them at a time
                pending.append((idx, self._ct2(src, beam, nbest, max_len, asynchronous=True)))
                continue
            run = self._ct2 if self.cfg.engine == "ct2" else self._hf
            hyps = run(src, beam, nbest, max_len)
            for i, h in zip(idx, hyps):
                results[i] = h
            bar.update(len(idx))
        for idx, wait in pending:
            for i, h in zip(idx, wait()):
                results[i] = h
            bar.update(len(idx))
        bar.close()
        for i, line in enumerate(lines):
            if not line.strip():
                results[i] = [Hypothesis("", [], 0.0)] * nbest
        return results  # type: ignore[return-value]

    def _warn_once(self, msg: str) -> None:
        """Log `msg` as a warning unless this translator already did (evaluate decodes the same lines thrice)."""
        if msg not in self._warned:
            self._warned.add(msg)
            log.warning(msg)

    def _fit(self, seqs: list[list[str]], what: str, limit: int, end: tuple[str, ...] = ()) -> list[list[str]]:
        """`fit_positions`, the count of cut sequences in a warning."""
        out, cut = fit_positions(seqs, limit, end)
        if cut:
            self._warn_once(f"{cut} of {len(seqs)} {what} longer than {limit} tokens (the model's "
                            f"max_position_embeddings) were truncated to {limit} tokens")
        return out

    def _limits(self, pieces: list[list[str]], batches: list[list[int]]) -> list[int]:
        """Each batch's decode limit, max_len_a x its longest source + max_len_b, capped at the model's positions
        (the sentences of capped batches are counted in a warning)."""
        c, cap = self.cfg, self.max_positions
        want = [int(c.max_len_a * max(len(pieces[i]) for i in idx) + c.max_len_b) for idx in batches]
        if capped := sum(len(idx) for idx, n in zip(batches, want) if n > cap):
            self._warn_once(f"{capped} of {len(pieces)} sentences had their decode limit (max_len_a x source tokens "
                            f"+ max_len_b) capped at {cap} tokens, the model's max_position_embeddings")
        return [min(n, cap) for n in want]

    def score(self, src: list[str], tgt: list[str]) -> list[tuple[float, int]]:
        """Forced-decoding log-probability of each target given its source: (sum of log-probs, tokens).

        Tokens include the final `</s>`. Used for perplexity and p(t = y_hat).
        """
        v = self.vocab
        src_p = self._fit(v.src_pieces(src), "sources", self.max_positions, ("</s>",))
        # the decoder reads the start token and the target: one position is left for the start
        tgt_p = self._fit(v.tgt_sp.encode(list(tgt), out_type=str), "targets", self.max_positions - 1)
        out: list[tuple[float, int]] = [(0.0, 0)] * len(src)
        for idx in _by_length([len(p) + len(t) for p, t in zip(src_p, tgt_p)], self.cfg.max_tokens):
            if self.cfg.engine == "ct2":
                res = self.ct2.score_batch([src_p[i] for i in idx], [tgt_p[i] for i in idx])
                for i, r in zip(idx, res):
                    out[i] = (float(sum(r.log_probs)), len(r.log_probs))
            else:
                ids = lambda ps: [v.token_to_id.get(p, v.unk_id) for p in ps]  # noqa: E731
                b = collate([ids(src_p[i]) for i in idx], [ids(tgt_p[i]) + [v.eos_id] for i in idx], v.pad_id)
                b = {k: t.to(self.cfg.device) for k, t in b.items()}
                with torch.no_grad():
                    logits = training_logits(self.model, b)
                lp = log_probs(logits, v.pad_id)
                mask = b["labels"].ne(IGNORE)
                tok = lp.gather(-1, b["labels"].clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
                for row, i in enumerate(idx):
                    out[i] = (float(tok[row].sum()), int(mask[row].sum()))
        return out

    def _ct2(self, src: list[list[str]], beam: int, nbest: int, max_len: int, asynchronous: bool = False):
        """Hypotheses per source line; with `asynchronous`, a function that waits for them."""
        c = self.cfg
        extra = {}
        if self._engine_batching:
            extra = {"max_batch_size": c.max_batch_size or c.max_tokens, "batch_type": c.batch_type}
        scores = c.return_scores or beam > 1 or nbest > 1
        out = self.ct2.translate_batch(
            src, beam_size=beam, num_hypotheses=nbest, max_decoding_length=max_len, return_scores=scores,
            length_penalty=c.length_penalty, use_vmap=c.vmap is not None, asynchronous=asynchronous, **extra,
        )

        def convert(results) -> list[list[Hypothesis]]:
            return [[Hypothesis(self.vocab.decode_pieces(toks), toks, float(r.scores[k]) if scores else 0.0)
                     for k, toks in enumerate(r.hypotheses)] for r in results]

        return (lambda: convert([r.result() for r in out])) if asynchronous else convert(out)

    @torch.no_grad()
    def _hf(self, src: list[list[str]], beam: int, nbest: int, max_len: int) -> list[list[Hypothesis]]:
        v = self.vocab
        ids = pad([[v.token_to_id.get(p, v.unk_id) for p in s] for s in src], v.pad_id).to(self.cfg.device)
        gen = self.model.generate(
            input_ids=ids, attention_mask=ids.ne(v.pad_id).long(), num_beams=beam, num_return_sequences=nbest,
            do_sample=False, max_new_tokens=max_len, length_penalty=self.cfg.length_penalty,
            early_stopping=True, output_scores=True, return_dict_in_generate=True,
            decoder_start_token_id=v.pad_id, eos_token_id=v.eos_id, pad_token_id=v.pad_id,
            suppress_tokens=[v.pad_id], bad_words_ids=None, forced_eos_token_id=None,
        )
        seqs = gen.sequences[:, 1:]  # drop the decoder start
        # greedy search reports processed logits, beam search log-probs: normalise only the former
        scores = self.model.compute_transition_scores(gen.sequences, gen.scores, gen.get("beam_indices"),
                                                      normalize_logits=beam == 1)
        out = []
        for b in range(len(src)):
            hyps = []
            for k in range(nbest):
                row = b * nbest + k
                toks = seqs[row].tolist()
                n = toks.index(v.eos_id) + 1 if v.eos_id in toks else len(toks)
                tok_scores = scores[row][:n]
                pieces = v.ids_to_pieces(toks[:n])
                mean = float(tok_scores[torch.isfinite(tok_scores)].mean())
                hyps.append(Hypothesis(v.decode_pieces(pieces), pieces, mean))
            out.append(hyps)
        return out


def write_lines(path: str | Path | None, lines: list[str]) -> None:
    """Write one line per input line (stdout when path is None or '-'), atomically for files."""
    text = "".join(ln.replace("\n", " ") + "\n" for ln in lines)
    if path in (None, "-"):
        sys.stdout.write(text)
    else:
        with atomic_open(path) as f:
            f.write(text)
