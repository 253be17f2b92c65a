"""What `seqkd distill` makes: the settings of a distillation (shared by its workers and the shard merge)."""

from __future__ import annotations

from dataclasses import dataclass

from seqkd.inference.decode import DecodeConfig

# The fields a distillation hands to its teacher's `DecodeConfig` as they are (same names, meanings and defaults).
# They stay fields of DistillConfig itself, in their place: `asdict(DistillConfig)` is the distilled data's identity
# (`workers._identity`, recorded in every distilled folder), so nesting a DecodeConfig would orphan those folders.
DECODE_FIELDS = ("engine", "beam", "compute_type", "max_len_a", "max_len_b", "max_tokens", "threads")


@dataclass
class DistillConfig:
    mode: str = "seq_kd"  # seq_kd: teacher's beam output | seq_inter: n-best candidate closest to the reference
    beam: int = 5  # beam size (Seq-Inter: also the n-best size K; the paper uses 35)
    metric: str = "bleu"  # Seq-Inter similarity: bleu (sentence BLEU, exp smoothing) | chrf
    fraction: float = 1.0  # Seq-Inter: use a random fraction of the corpus
    shard_size: int = 2000
    engine: str = "ct2"
    compute_type: str = "float32"
    max_len_a: float = 1.5
    max_len_b: int = 10
    max_tokens: int = 4096
    filter_worst: float = 0.0  # drop this fraction of pairs with the lowest teacher score (mean log-prob)
    max_len_ratio: float = 0.0  # drop pairs whose hyp/src length ratio (characters) exceeds this (or its inverse)
    seed: int = 1
    # speed only, not part of the data's identity: threads (0 = torch's) as inter_threads parallel batches
    # (0 = auto: 2 for n-best lists, 1 for beam output). benchmarks/nbest_speed.py, interleaved median
    # of 3 on 2 cores: 35-best 8.7 sent/s at 2 x 1 vs 6.0 at 1 x 2; beam 5 27.5 vs 35.8 (RESULTS sec. 7)
    threads: int = 0
    inter_threads: int = 0
    device: str = "cpu"  # cpu | cuda (each worker on GPU LOCAL_RANK modulo the GPUs it sees)

    def decode_config(self, device: str = "cpu", device_index: int = 0) -> DecodeConfig:
        """The teacher's decoding settings: DECODE_FIELDS as they are; Seq-Inter asks for `beam`-best lists;
        `inter_threads` 0 becomes 2 for n-best lists, 1 for beam output; `device` / `device_index` are the
        worker's (`workers` resolves them from `device`)."""
        seq_inter = self.mode == "seq_inter"
        return DecodeConfig(**{k: getattr(self, k) for k in DECODE_FIELDS}, nbest=self.beam if seq_inter else 1,
                            inter_threads=self.inter_threads or (2 if seq_inter else 1), device=device,
                            device_index=device_index)


# fields left out of the data's identity: a new field belongs here unless it changes the data, so that
# folders distilled before it existed stay up to date
SPEED_FIELDS = ("threads", "inter_threads", "device")
