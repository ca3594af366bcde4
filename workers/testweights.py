"""Small random-weight checkpoints of the real architectures.

Weights cannot be downloaded here, so tests and the offline demo run on these:
the real diffusers classes in standard diffusers layout (model_index.json,
one folder per component, safetensors), loaded by the same code as real
weights. The VAE has four levels, so it downsamples by 8 like the real one
and a 512 px job has production shapes. Their output is noise.

Sizes follow diffusers' own fast tests (their tiny UNet, VAE and CLIP configs).
"""

from __future__ import annotations

import json
import shutil
import string
from dataclasses import dataclass
from pathlib import Path

TEST_DIR = "test"
# The image moderation classifier (MODERATION_IMAGE_MODEL=test/moderation).
MODERATION_FOLDER = f"{TEST_DIR}/moderation"


@dataclass(frozen=True)
class RandomCheckpoint:
    slug: str
    name: str
    family: str
    folder: str  # under MODELS_DIR
    description: str
    turbo: bool = False
    inpainting: bool = False  # a dedicated inpainting checkpoint (9-channel UNet)

    @property
    def spec(self):
        from workers.spec import CheckpointSpec

        return CheckpointSpec(
            slug=self.slug, family=self.family, source_kind="folder", source=self.folder, inpainting=self.inpainting
        )


RANDOM_CHECKPOINTS = [
    RandomCheckpoint("test-sd1", "Test SD 1.x (random weights)", "sd1", f"{TEST_DIR}/sd1", "Tiny SD 1.x architecture."),
    RandomCheckpoint(
        "test-sd1-alt",
        "Test SD 1.x fine-tune (random weights)",
        "sd1",
        f"{TEST_DIR}/sd1-alt",
        "Another UNet on the same VAE and text encoder as Test SD 1.x: the worker shares them.",
    ),
    RandomCheckpoint(
        "test-sd1-inpaint",
        "Test SD 1.x inpainting (random weights)",
        "sd1",
        f"{TEST_DIR}/sd1-inpaint",
        "A dedicated inpainting UNet (9 input channels: latents, mask, masked picture) on Test SD 1.x's VAE and "
        "text encoder.",
        inpainting=True,
    ),
    RandomCheckpoint("test-sd2", "Test SD 2.x (random weights)", "sd2", f"{TEST_DIR}/sd2", "Tiny SD 2.x architecture."),
    RandomCheckpoint("test-sdxl", "Test SDXL (random weights)", "sdxl", f"{TEST_DIR}/sdxl", "Tiny SDXL architecture."),
    RandomCheckpoint(
        "test-sdxl-inpaint",
        "Test SDXL inpainting (random weights)",
        "sdxl",
        f"{TEST_DIR}/sdxl-inpaint",
        "A dedicated SDXL inpainting UNet (9 input channels) on Test SDXL's VAE and text encoders.",
        inpainting=True,
    ),
    RandomCheckpoint(
        "test-sdxl-turbo",
        "Test SDXL-Turbo (random weights)",
        "sdxl-turbo",
        f"{TEST_DIR}/sdxl-turbo",
        "Same weights as Test SDXL with turbo settings (1-4 steps, no guidance).",
        turbo=True,
    ),
]


@dataclass(frozen=True)
class RandomControlNet:
    """A ControlNet of a test checkpoint's UNet (diffusers' ControlNetModel.from_unet)."""

    slug: str
    name: str
    family: str
    kind: str
    folder: str  # under MODELS_DIR
    base: str  # the test checkpoint whose UNet it copies


RANDOM_CONTROLNETS = [
    RandomControlNet(
        "test-sd1-canny", "Test SD 1.x canny ControlNet", "sd1", "canny", f"{TEST_DIR}/controlnet-sd1", "sd1"
    ),
    RandomControlNet(
        "test-sdxl-canny", "Test SDXL canny ControlNet", "sdxl", "canny", f"{TEST_DIR}/controlnet-sdxl", "sdxl"
    ),
]


@dataclass(frozen=True)
class RandomLora:
    """A LoRA of a test checkpoint's UNet and text encoders, random (its up
    matrices too: PEFT starts them at zero, a LoRA that changes nothing),
    saved as one .safetensors file in `layout`: diffusers' own (PEFT keys)
    or kohya's (lora_unet_* / lora_te_*, lora_down/lora_up and alpha), so
    both of diffusers' loaders run."""

    slug: str
    name: str
    family: str
    file: str  # under MODELS_DIR
    base: str  # the test checkpoint it was made on
    layout: str  # diffusers | kohya
    trigger_words: str = ""


RANDOM_LORAS = [
    RandomLora(
        "test-sd1-ink", "Test SD 1.x ink LoRA", "sd1", f"{TEST_DIR}/loras/sd1-ink.safetensors", "sd1", "kohya", "ink"
    ),
    RandomLora(
        "test-sd1-glow", "Test SD 1.x glow LoRA", "sd1", f"{TEST_DIR}/loras/sd1-glow.safetensors", "sd1", "diffusers"
    ),
    RandomLora(
        "test-sdxl-film",
        "Test SDXL film LoRA",
        "sdxl",
        f"{TEST_DIR}/loras/sdxl-film.safetensors",
        "sdxl",
        "diffusers",
        "film grain, 35mm",
    ),
]
# A depth annotator (a tiny DPT): point ANNOTATORS_DIR at its parent.
ANNOTATORS_FOLDER = f"{TEST_DIR}/annotators"


def build_all(models_dir: Path, *, force: bool = False) -> list[RandomCheckpoint]:
    """Build every test checkpoint and ControlNet under models_dir, the test
    image moderation classifier and depth annotator (skips what is built
    already)."""
    root = Path(models_dir)
    builders = {
        "test-sd1": lambda d: _build_sd(d, seed=1, sd2=False),
        "test-sd1-alt": lambda d: _build_sd_alt(d, base=root / f"{TEST_DIR}/sd1"),
        "test-sd1-inpaint": lambda d: _build_inpaint(d, base=root / f"{TEST_DIR}/sd1"),
        "test-sd2": lambda d: _build_sd(d, seed=2, sd2=True),
        "test-sdxl": lambda d: _build_sdxl(d, seed=3),
        "test-sdxl-inpaint": lambda d: _build_inpaint(d, base=root / f"{TEST_DIR}/sdxl"),
        "test-sdxl-turbo": lambda d: _copy(root / f"{TEST_DIR}/sdxl", d),
    }
    for checkpoint in RANDOM_CHECKPOINTS:
        _build_once(root / checkpoint.folder, "model_index.json", builders[checkpoint.slug], force=force)
    for control in RANDOM_CONTROLNETS:
        base = root / TEST_DIR / control.base
        _build_once(root / control.folder, "config.json", lambda d, base=base: _build_controlnet(d, base), force=force)
    for seed, lora in enumerate(RANDOM_LORAS, start=21):
        target = root / lora.file
        if force or not target.exists():
            _build_lora(target, root / TEST_DIR / lora.base, layout=lora.layout, seed=seed)
    _build_once(root / MODERATION_FOLDER, "config.json", _build_moderation_classifier, force=force)
    _build_once(root / ANNOTATORS_FOLDER / "depth", "config.json", _build_depth_annotator, force=force)
    return RANDOM_CHECKPOINTS


def _build_lora(target: Path, base: Path, *, layout: str, seed: int) -> None:
    """A rank-4 LoRA on the base's attention projections (UNet and every
    text encoder), written to `target` (a .safetensors file)."""
    import torch
    from diffusers import DiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    pipe = DiffusionPipeline.from_pretrained(base)
    targets = {
        "unet": ["to_q", "to_k", "to_v", "to_out.0"],
        "text_encoder": ["q_proj", "k_proj", "v_proj", "out_proj"],
        "text_encoder_2": ["q_proj", "k_proj", "v_proj", "out_proj"],
    }
    state = {}
    for component, modules in targets.items():
        model = getattr(pipe, component, None)
        if model is None:
            continue
        model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=modules, init_lora_weights="gaussian"))
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                with torch.no_grad():
                    parameter.copy_(torch.randn_like(parameter) * 0.5)
        layers = get_peft_model_state_dict(model)
        state.update({f"{component}.{key}": value.contiguous() for key, value in layers.items()})
    if layout == "kohya":
        state = _kohya_keys(state)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    save_file(state, str(partial))
    partial.rename(target)


def _kohya_keys(state: dict) -> dict:
    """diffusers' PEFT keys as kohya's sd-scripts writes an SD 1.x LoRA:
    lora_unet_<module path with _>.lora_down.weight / .lora_up.weight and an
    .alpha per module (alpha = rank: a scale of 1), the text encoder's
    modules under text_model as in its files."""
    import torch

    prefixes = {"unet.": "lora_unet_", "text_encoder.": "lora_te_", "text_encoder_2.": "lora_te2_"}
    converted = {}
    for key, value in state.items():
        component = next(prefix for prefix in prefixes if key.startswith(prefix))
        module, kind = key[len(component) :].rsplit(".lora_", 1)
        if component != "unet." and not module.startswith("text_model."):
            # transformers 5's CLIP text model has no text_model level;
            # sd-scripts' files (and diffusers' converter) name it.
            module = f"text_model.{module}"
        name = prefixes[component] + module.replace(".", "_")
        converted[f"{name}.lora_down.weight" if kind.startswith("A") else f"{name}.lora_up.weight"] = value
        if kind.startswith("A"):
            converted[f"{name}.alpha"] = torch.tensor(float(value.shape[0]))
    return converted


def _build_controlnet(folder: Path, base: Path) -> None:
    """A ControlNet from the base's UNet config and encoder weights, its
    zero convolutions randomised (diffusers starts them at zero, which
    would make a ControlNet that changes nothing)."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(21)
    controlnet = ControlNetModel.from_unet(UNet2DConditionModel.from_pretrained(base / "unet"))
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            if "zero_conv" in name or "controlnet_down_blocks" in name or "controlnet_mid_block" in name:
                parameter.normal_(0, 0.05)
    controlnet.save_pretrained(folder, safe_serialization=True)


def _build_depth_annotator(folder: Path) -> None:
    """A tiny DPT depth estimator with its image processor, saved as
    transformers saves a real one (workers.annotators loads it the same way)."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(22)
    config = DPTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
        neck_hidden_sizes=[16, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=16,
        backbone_out_indices=[0, 1, 2, 3],
        reassemble_factors=[4, 2, 1, 0.5],
    )
    DPTForDepthEstimation(config).save_pretrained(folder, safe_serialization=True)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(folder)


def _build_once(target: Path, marker: str, builder, *, force: bool) -> None:
    if force and target.exists():
        shutil.rmtree(target)
    if not (target / marker).exists():
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        builder(tmp)
        tmp.rename(target)  # a half-built folder is never taken for a model


def _build_moderation_classifier(folder: Path) -> None:
    """A tiny ViT image classifier (labels normal / nsfw) with its image
    processor, saved as transformers saves a real one: the worker's image
    check (workers.moderation) loads it through the same code. Its scores
    are arbitrary: tests flag every picture with MODERATION_THRESHOLD=0 and
    none with 1.01."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(5)
    labels = {0: "normal", 1: "nsfw"}
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        id2label=labels,
        label2id={label: index for index, label in labels.items()},
    )
    ViTForImageClassification(config).save_pretrained(folder, safe_serialization=True)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def _tokenizer(folder: Path):
    """A CLIP tokenizer from a hand-written vocabulary: every character we
    feed it, as itself and as a word end."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase + string.digits + string.punctuation:
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        model_max_length=77,
        pad_token="<|endoftext|>",  # noqa: S106 (a token, not a password)
    )


def _text_config(*, sd2: bool = False):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=1000,
        projection_dim=32,
        hidden_act="gelu" if sd2 else "quick_gelu",
    )


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=256,
    )


def _unet(**architecture):
    """diffusers' tiny two-level UNet; the family adds its own settings."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        **architecture,
    )


def _sd_unet(*, sd2: bool):
    extra = {"attention_head_dim": (2, 4), "use_linear_projection": True} if sd2 else {}
    return _unet(cross_attention_dim=32, **extra)


def _build_sd(folder: Path, *, seed: int, sd2: bool) -> None:
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        prediction_type="v_prediction" if sd2 else "epsilon",
    )
    pipe = StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config(sd2=sd2)),
        tokenizer=_tokenizer(folder / "_tok"),
        unet=_sd_unet(sd2=sd2),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(folder / "_tok")


def _build_sd_alt(folder: Path, *, base: Path) -> None:
    """A fine-tune: new UNet, and byte-identical VAE, text encoder, tokenizer."""
    import torch

    _copy(base, folder)
    torch.manual_seed(11)
    shutil.rmtree(folder / "unet")
    _sd_unet(sd2=False).save_pretrained(folder / "unet", safe_serialization=True)


def _build_inpaint(folder: Path, *, base: Path) -> None:
    """An inpainting checkpoint: the base's UNet config with 9 input
    channels (4 latent, 1 mask, 4 masked-picture latent), on the base's
    byte-identical VAE, text encoders and tokenizers."""
    import torch
    from diffusers import UNet2DConditionModel

    _copy(base, folder)
    torch.manual_seed(12)
    config = {**UNet2DConditionModel.load_config(folder / "unet"), "in_channels": 9}
    shutil.rmtree(folder / "unet")
    UNet2DConditionModel.from_config(config).save_pretrained(folder / "unet", safe_serialization=True)


def _build_sdxl(folder: Path, *, seed: int) -> None:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = _unet(
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids x 8 + 32
        cross_attention_dim=64,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1
    )
    tokenizer = _tokenizer(folder / "_tok")
    pipe = StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config()),
        text_encoder_2=CLIPTextModelWithProjection(_text_config()),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(folder / "_tok")


def _copy(source: Path, folder: Path) -> None:
    shutil.copytree(source, folder)
