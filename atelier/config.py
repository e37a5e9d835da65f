"""params.yaml -> typed, validated objects. Unknown keys, wrong types and missing values are errors that name the
key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from atelier import paths

# The training resolutions (clean.resolution) the models are built for (atelier/models/latent_diffusion.py).
SUPPORTED_RESOLUTIONS = (32, 64, 128)


class ConfigError(ValueError):
    """params.yaml is not valid; the message names the file and the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DemoParams(Section):
    seed: int
    per_class: int = Field(gt=0)
    size: int = Field(ge=32)


class Columns(Section):
    """Which metadata field holds what, as the source spells it."""

    file_name: str = "file_name"
    title: str = "title"
    creator: str = "creator"
    caption: str = "caption"
    license: str = "license"
    license_url: str = "license_url"
    source_url: str = "source_url"
    noai: str = "noai"
    model_release: str = "model_release"  # true: the people shown consented (a model release): faces stay unblurred
    historical: str = "historical"  # true on a public-domain artwork of historical figures: faces stay
    url: str = "url"  # url sources: the column with the image URL


class FolderSourceParams(Section):
    """A folder with metadata.jsonl or metadata.csv naming one image file per row (the imagefolder convention)."""

    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    kind: Literal["folder"]
    path: str
    columns: Columns = Columns()


class ShardSourceParams(Section):
    """WebDataset / img2dataset tar shards: KEY.jpg|png|webp beside KEY.json (metadata) and KEY.txt (caption)."""

    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    kind: Literal["webdataset"]
    path: str  # a folder of .tar shards, or a glob such as data/sources/laion/{00000..00009}.tar
    columns: Columns = Columns()


class ParquetSourceParams(Section):
    """Parquet files in the Hugging Face datasets layout: an image column of {bytes, path} plus metadata columns."""

    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    kind: Literal["parquet"]
    path: str  # a .parquet file, a folder of them, or a glob
    image_column: str = "image"
    columns: Columns = Columns()


class HttpParams(Section):
    """The polite HTTP client of url sources."""

    user_agent: str = Field(default="AtelierBot/0.1", min_length=1)  # also the agent looked up in robots.txt
    timeout_s: float = Field(default=10.0, gt=0)
    retries: int = Field(default=2, ge=0)  # extra attempts after a timeout, a connection error or a 5xx/429
    backoff_s: float = Field(default=0.5, ge=0)  # wait before retry n: backoff_s * 2**(n-1)
    per_host_concurrency: int = Field(default=2, ge=1)
    max_connections: int = Field(default=8, ge=1)


class UrlSourceParams(Section):
    """A list of image URLs (metadata.csv or .jsonl with a url column), fetched honouring opt-out signals."""

    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    kind: Literal["urls"]
    path: str  # the CSV or JSON Lines file
    columns: Columns = Columns()
    http: HttpParams = HttpParams()


SourceParams = Annotated[
    FolderSourceParams | ShardSourceParams | ParquetSourceParams | UrlSourceParams, Field(discriminator="kind")
]


class IngestParams(Section):
    sources: list[SourceParams] = Field(min_length=1)
    max_file_bytes: int = Field(default=256 * 2**20, gt=0)  # a bigger image is refused (file_too_large) unread
    max_field_chars: int = Field(default=10_000, gt=0)  # a longer metadata field is refused, never cut
    recheck_after_days: float = Field(default=30, ge=0)  # a URL fetched longer ago has its opt-outs checked again
    encrypt_raw: bool = True  # the raw store's packs are AES-GCM encrypted at rest (atelier/rawstore.py)

    @model_validator(mode="after")
    def _unique_names(self) -> IngestParams:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        return self


class EngineParams(Section):
    """Where ingest and clean run their chunks. Results do not depend on it, so no stage lists it as a DVC param."""

    workers: int = Field(default=2, ge=1)  # local process pool size (1: run in the stage's own process)
    chunk_size: int = Field(default=128, ge=1)  # records per task
    dask_scheduler: str | None = None  # e.g. tcp://10.0.0.5:8786: run the chunks on that Dask cluster


class CleanParams(Section):
    resolution: int  # the training resolution: CLIP, autoencoder and UNet follow from it
    min_size: int = Field(ge=1)
    max_pixels: int = Field(gt=0)
    near_duplicate_hamming: int = Field(ge=0, le=64)
    faces: Literal["blur", "exclude", "keep"] = "blur"  # faces found in an image: blurred in the training copy,
    # the record excluded, or kept (atelier/faces.py exemptions)

    @model_validator(mode="after")
    def _supported_resolution(self) -> CleanParams:
        if self.resolution not in SUPPORTED_RESOLUTIONS:
            raise ValueError(
                f"clean.resolution {self.resolution} is not supported: choose one of {list(SUPPORTED_RESOLUTIONS)}"
            )
        if self.min_size < self.resolution:
            raise ValueError(
                f"clean.min_size {self.min_size} is below clean.resolution {self.resolution}: smaller "
                f"images would be upscaled for training; set clean.min_size to at least {self.resolution}"
            )
        return self


class PolicyParams(Section):
    commercial: bool
    allow_share_alike: bool
    allow_no_derivatives: bool
    # rights statements where the collection owner must choose (atelier/licenses.py RIGHTS_STATEMENTS)
    allow_no_known_copyright: bool = False  # rightsstatements.org NKC, "No known copyright restrictions"
    allow_no_copyright_us: bool = False  # rightsstatements.org NoC-US: public domain in the United States only


class LicenseParams(Section):
    policy: PolicyParams


class ClipParams(Section):
    pretrained: str | None = None
    seed: int
    embed_dim: int
    image_width: int
    image_layers: int
    patch_size: int
    text_width: int
    text_layers: int
    context_length: int
    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    lr: float
    weight_decay: float
    holdout_fraction: float = Field(gt=0, lt=1)
    evaluator_seed: int = 1  # the evaluator CLIP (models/evaluator): same data and settings, another seed

    @model_validator(mode="after")
    def _evaluator_differs(self) -> ClipParams:
        if self.evaluator_seed == self.seed:
            raise ValueError(
                f"train_clip.evaluator_seed {self.evaluator_seed} equals train_clip.seed: the evaluator "
                "would be the text encoder it judges; choose another seed"
            )
        return self


class AutoencoderParams(Section):
    seed: int
    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    lr: float
    kl_weight: float


class DiffusionParams(Section):
    seed: int
    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    lr: float
    warmup_steps: int = Field(ge=0)
    caption_dropout: float = Field(ge=0, lt=1)
    min_snr_gamma: float = Field(gt=0)
    ema_decay: float = Field(gt=0, lt=1)
    prediction_type: Literal["epsilon", "v_prediction"]
    offset_noise: float = Field(ge=0)
    pooled_scale: float = Field(gt=0)
    # which generator: `latent` trains Atelier's own autoencoder + UNet from scratch on the licensed set; `lora_sd`
    # fine-tunes LoRA adapters (peft) on the local diffusers Stable Diffusion folder `base_model`, which must be
    # declared under `components` (its licence and training data)
    backend: Literal["latent", "lora_sd"] = "latent"
    base_model: str | None = None
    lora_rank: int = Field(default=4, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: a GPU when one is present, else the CPU
    processes: int = Field(default=1, ge=1)  # data-parallel training processes (torchrun + DDP: gloo on CPUs, NCCL on
    #                                          GPUs); the global batch stays batch_size, split across the processes

    @model_validator(mode="after")
    def _base_model_with_lora(self) -> DiffusionParams:
        if self.backend == "lora_sd" and not self.base_model:
            raise ValueError(
                "train_diffusion.backend lora_sd needs train_diffusion.base_model: the path of a local "
                "diffusers Stable Diffusion folder"
            )
        if self.backend == "latent" and self.base_model:
            raise ValueError(
                f"train_diffusion.base_model {self.base_model!r} is set but backend is latent, which "
                "trains from scratch; set backend: lora_sd or remove base_model"
            )
        if self.batch_size % self.processes:
            raise ValueError(
                f"train_diffusion.batch_size {self.batch_size} is not divisible by processes "
                f"{self.processes}: each process takes an equal share of the global batch"
            )
        return self


class EvaluateParams(Section):
    seed: int
    prompts: int = Field(
        default=48, ge=2
    )  # evaluation prompts: a seeded sample of held-out captions, at most this many
    fixed_prompts: list[str] = []  # prompts always evaluated besides the sample (they have no real image)
    per_prompt: int = Field(gt=0)
    sampling_steps: int = Field(gt=0)
    guidance: list[float] = Field(min_length=1)
    headline_guidance: float
    cmmd_sigma: float = Field(gt=0)
    replication_ratio: float = Field(gt=0, lt=1)
    replication_phash_hamming: int = Field(ge=0)

    @model_validator(mode="after")
    def _headline_is_evaluated(self) -> EvaluateParams:
        if self.headline_guidance not in self.guidance:
            raise ValueError(f"headline_guidance {self.headline_guidance} must be one of guidance {self.guidance}")
        return self


class PromoteParams(Section):
    """The gate's pre-registered rules. Thresholds are relative to the held-out real images measured in the same run,
    so any collection can pass on merit; the demo's style/palette accuracy applies only where captions name them."""

    min_retrieval_fraction: float = Field(ge=0)  # generations' top-1 prompt retrieval >= this x the real images'
    min_clip_score_fraction: float = Field(ge=0)  # generations' CLIPScore >= this x the real images'
    max_cmmd_multiple: float = Field(gt=0)  # CMMD(generated, real) <= this x the real-vs-real baseline
    max_replication_rate: float = Field(ge=0, le=1)
    champion_max_drop: float = Field(ge=0)  # refused when the paired CLIPScore difference to the champion
    #                                               (same prompts and seeds) is surely below -champion_max_drop
    min_style_accuracy: float | None = None  # demo convention only (captions "a {palette} {style} composition")
    min_palette_accuracy: float | None = None
    # reviewers' votes (atelier review; atelier/preference.py): the defaults change nothing while there are no votes
    preference_min_votes: int = Field(default=20, ge=1)  # head-to-head votes (challenger vs champion) for the rule
    preference_refuse_below: float = Field(default=0.5, ge=0, le=1)  # refused when the win rate's 95% high end < this
    preference_allow_margin: float = Field(default=0.05, ge=0, le=1)  # a CLIP figure missing its bar by less than
    #                                               this fraction of the bar is waived when the low end is above 0.5
    preference_ridge: float = Field(default=0.1, gt=0)  # Bradley-Terry prior N(0, 1/ridge) on each log-strength
    follow_preferred_guidance: bool = False  # champion.json names the clearly preferred guidance for generate
    # Before any relative rule, the evaluator itself: can it tell the held-out real images' own captions from the
    # others better than chance? (the 95% Wilson interval of its top-1 retrieval must lie above chance). When it
    # cannot, no CLIP figure means anything on this collection and the gate promotes nothing by itself: reviewers'
    # clear preference, or a person (atelier promote --version N --reason ...), decides. False skips the check.
    judge_evaluator: bool = True


class RegistryParams(Section):
    model_name: str
    experiment: str


MAX_CANDIDATES = 16  # best-of-K: at most this many seeds per artwork (K samples cost K times one)


class GenerateParams(Section):
    prompts: list[str] = Field(min_length=1)
    seed: int
    steps: int = Field(gt=0)
    guidance: float
    negative_prompt: str = ""
    output_size: int = Field(ge=256)
    resampler: Literal["nearest", "bicubic", "lanczos"]
    candidates: int = Field(
        default=1, ge=1, le=MAX_CANDIDATES
    )  # best-of-K: K seeds per artwork, the evaluator keeps the best


class ComponentParams(Section):
    """A model part that was not trained here (a base model, its text encoder, a pretrained CLIP), as its makers
    declare it. Its weights digest is computed from `path`, never declared."""

    name: str = Field(min_length=1)
    role: Literal["base_model", "text_encoder", "clip"]
    path: str = Field(min_length=1)  # local file or folder holding its weights
    license: str = Field(min_length=1)
    training_data: str = Field(min_length=1)  # what it was trained on, in its makers' words
    training_data_licensed: bool | None = None  # true only when its makers declare licensed/opt-in training data;
    #                                            null (unknown) counts as false in the licensed_only verdict


class Params(Section):
    demo: DemoParams
    ingest: IngestParams
    engine: EngineParams = EngineParams()
    clean: CleanParams
    license: LicenseParams
    train_clip: ClipParams
    train_autoencoder: AutoencoderParams
    train_diffusion: DiffusionParams
    evaluate: EvaluateParams
    promote: PromoteParams
    registry: RegistryParams
    generate: GenerateParams
    components: list[ComponentParams] = []  # every model part not trained here; see ComponentParams

    @model_validator(mode="after")
    def _patches_tile_images(self) -> Params:
        resolution, patch = self.clean.resolution, self.train_clip.patch_size
        if self.train_clip.pretrained is None and resolution % patch:
            raise ValueError(
                f"clean.resolution {resolution} is not divisible by train_clip.patch_size {patch}: the "
                "CLIP cuts each image into patch_size x patch_size patches; choose sizes that divide"
            )
        return self

    @model_validator(mode="after")
    def _outside_parts_declared(self) -> Params:
        declared = {c.path.rstrip("/") for c in self.components}
        used = {
            "train_clip.pretrained": self.train_clip.pretrained,
            "train_diffusion.base_model": self.train_diffusion.base_model,
        }
        for key, path in used.items():
            if path and path.removeprefix("local-dir:").rstrip("/") not in declared:
                raise ValueError(
                    f"{key} {path!r} is not declared under components: name its licence and training "
                    "data there (docs/models-and-evaluation.md, 'Bring your own models'); a part whose training "
                    "data is not declared cannot be used"
                )
        return self


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "value_error" and not error["loc"]:  # a rule across sections: its message names the keys
        return error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return f"unknown key '{key}': remove it or check its spelling"
    if kind == "missing":
        return f"missing value for '{key}'"
    return f"'{key}': {error['msg']} (got {error.get('input')!r})"


def load_params(path: Path | str = paths.PARAMS) -> Params:
    """Read and validate params.yaml; raise ConfigError naming the file and every bad key."""
    path = Path(path)
    try:
        # libyaml's loader when PyYAML has it (the same safe subset, ten times faster than the pure-Python one)
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found; copy params.yaml from the repository") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None
