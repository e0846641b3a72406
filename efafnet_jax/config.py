"""Config construction shared by the packaged configs (`efafnet_jax/configs`).

Each packaged config is a thin big_vision-style `get_config(spec)` that calls
`build_config` with its dataset's defaults. The spec is the text after the colon
in `--config coco:efafnet,r50,256x192`: comma-separated parts in any order, each
optional (VARIANT, rDEPTH, HxW). A config file of one's own works the same way
(`--config path/to/my_config.py:spec`).
"""

from __future__ import annotations

import importlib.resources
import os
import re

import ml_collections
from absl import flags
from ml_collections import config_flags

# Ablation rows of the paper's Table VI (plus Table VIII's "SBN+FASM") as switches.
VARIANTS: dict[str, dict[str, object]] = {
    "sbn": dict(use_fam=False, use_fsm=False, use_fusion=False, head="deconv"),
    "sbn_fam": dict(use_fam=True, use_fsm=False, use_fusion=False, head="deconv"),
    "sbn_fsm": dict(use_fam=False, use_fsm=True, use_fusion=False, head="deconv"),
    "sbn_fasm": dict(use_fam=True, use_fsm=True, use_fusion=False, head="deconv"),
    "sbn_ffm": dict(use_fam=False, use_fsm=False, use_fusion=True, head="deconv"),
    "sbn_duc": dict(use_fam=False, use_fsm=False, use_fusion=False, head="duc"),
    "efafnet": dict(use_fam=True, use_fsm=True, use_fusion=True, head="duc"),
}

# Bottleneck blocks per stage, from the ResNet paper (He et al. 2016, Table 1).
RESNET_BLOCKS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}

# ImageNet statistics on [0, 1] RGB, as torchvision and SimpleBaseline use them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BACKBONE_STRIDE = 32
HEATMAP_STRIDE = 4


def parse_spec(
    spec: str | None, default_variant: str, default_depth: int, default_size: tuple[int, int]
) -> tuple[str, int, tuple[int, int]]:
    """Parses 'VARIANT,rDEPTH,HxW' (parts optional, any order) into a triple."""
    variant, depth, size = default_variant, default_depth, default_size
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        if part in VARIANTS:
            variant = part
        elif re.fullmatch(r"r\d+", part):
            depth = int(part[1:])
            if depth not in RESNET_BLOCKS:
                raise ValueError(
                    f"config spec {spec!r}: depth {depth} is not one of {sorted(RESNET_BLOCKS)}"
                )
        elif re.fullmatch(r"\d+x\d+", part):
            height, width = (int(v) for v in part.split("x"))
            size = (height, width)
        else:
            raise ValueError(
                f"config spec {spec!r}: part {part!r} is neither a variant "
                f"({', '.join(VARIANTS)}), a depth (r50, r101, r152) nor a "
                "size (HxW)"
            )
    return variant, depth, size


def model_config(variant: str, depth: int, num_joints: int) -> ml_collections.ConfigDict:
    """Model settings of one Table VI row at full (paper) widths."""
    m = ml_collections.ConfigDict()
    m.variant = variant
    m.depth = depth
    m.stage_blocks = RESNET_BLOCKS[depth]
    m.stem_width = 64
    m.width = 64  # planes of the first stage; later stages double it
    m.num_joints = num_joints
    m.use_fam = VARIANTS[variant]["use_fam"]
    m.use_fsm = VARIANTS[variant]["use_fsm"]
    m.use_fusion = VARIANTS[variant]["use_fusion"]
    m.head = VARIANTS[variant]["head"]

    # FAM: Res2Net's 26w x 4s widths (Gao et al. 2019); see docs/design.md.
    m.fam = ml_collections.ConfigDict(dict(base_width=26, scale=4))
    # FSM: channel selection MLP reduction and the location-sensitive branch.
    m.fsm = ml_collections.ConfigDict(
        dict(
            reduction=16,
            lss_hidden=1,  # W1 in R^{1x1xC}: C -> 1 channel (paper Eq. 2)
            lss_relu_before_sigmoid=True,  # Eq. 2 as printed: Sigmoid(ReLU(W2 ReLU(W1 X)))
            arrangement="parallel",  # Table VII: "parallel", "cs_lss" or "lss_cs"
        )
    )
    m.fusion = ml_collections.ConfigDict(dict(aux_supervision=False))
    m.deconv = ml_collections.ConfigDict(dict(num_layers=3, channels=256, kernel=4))
    m.duc = ml_collections.ConfigDict(dict(upscale=8, kernel=3))
    m.final_kernel = 1
    m.color_order = "rgb"
    m.mean = IMAGENET_MEAN
    m.std = IMAGENET_STD
    m.dtype = "float32"
    m.param_dtype = "float32"
    # "auto": the entry points pick "cpu_gemm" or "xla" for the platform they run on
    # (efafnet_jax.platform.resolve_conv_impl); see models/kernels.py.
    m.conv_impl = "auto"
    # How outputs become heatmaps: "identity" (MSE/OHKM-trained) or "spatial_softmax".
    m.heatmap_activation = "identity"
    return m


# Where each dataset lies as released, in HRNet's data/ layout (docs/data.md).
DATA_LAYOUT = {
    "coco": dict(
        train_ann="data/coco/annotations/person_keypoints_train2017.json",
        train_images="data/coco/images/train2017",
        val_ann="data/coco/annotations/person_keypoints_val2017.json",
        val_images="data/coco/images/val2017",
        val_detections="data/coco/person_detection_results/"
        "COCO_val2017_detections_AP_H_56_person.json",
    ),
    "crowdpose": dict(
        train_ann="data/crowdpose/json/crowdpose_trainval.json",
        train_images="data/crowdpose/images",
        val_ann="data/crowdpose/json/crowdpose_test.json",
        val_images="data/crowdpose/images",
        val_detections="",
    ),
    "mpii": dict(
        train_ann="data/mpii/annot/train.json",
        train_images="data/mpii/images",
        val_ann="data/mpii/annot/valid.json",
        val_images="data/mpii/images",
        val_detections="",
    ),
}


# The builder of each dataset (efafnet_jax/data/tfds/builders.py).
TFDS_NAMES = {"coco": "coco_keypoints", "crowdpose": "crowdpose", "mpii": "mpii"}


def data_config(dataset: str) -> ml_collections.ConfigDict:
    """Dataset files, reading policy and SimpleBaseline's augmentation (paper IV.A)."""
    d = ml_collections.ConfigDict()
    d.dataset = dataset
    d.update(
        DATA_LAYOUT.get(
            dataset,
            dict(train_ann="", train_images="", val_ann="", val_images="", val_detections=""),
        )
    )
    d.mpii_headboxes = "data/mpii/annot/gt_valid.mat" if dataset == "mpii" else ""
    # "files" (the layout above) or "tfds": a dataset built by efafnet_jax.data.tfds.build,
    # read through tfds.data_source (docs/data.md "TFDS"); "" data dir: TFDS's default.
    d.source = "files"
    d.tfds_name = TFDS_NAMES.get(dataset, "")
    d.tfds_data_dir = ""
    d.det_score_threshold = 0.0  # HRNet's image_thre
    d.det_box_extension = 0.3 if dataset == "crowdpose" else 0.0  # paper IV.C
    d.on_bad_record = "raise"  # or "skip": reported in one summary line
    d.check_images = True
    d.generated = False  # True: generate the synthetic dataset under <workdir>/data
    d.use_joint_weights = False
    # "msra": Gaussians at the nearest heatmap pixel (HRNet, the paper's recipe);
    # "unbiased": at the exact sub-pixel location (DARK; docs/evaluation.md "Codecs"); "": the
    # geometry's own, "msra" for the standard transform and "unbiased" under data.udp.
    d.target_encoding = ""
    # UDP's unit-length geometry for crops, targets, decoding and the flip test
    # (docs/evaluation.md "Codecs"); off in the paper's recipe.
    d.udp = False
    # Training crops warped on the accelerator (Speed 2/2): the host sends the source
    # region in a (height, width) buffer. 640 x 640 holds any COCO image whole; larger
    # regions are shrunk by an integer factor (efafnet_jax/data/region.py).
    d.device_augment = False
    d.device_buffer_hw = (640, 640)
    d.keypoints = ml_collections.ConfigDict()  # a custom keypoint set (data/keypoints.py)
    d.augment = ml_collections.ConfigDict(
        dict(
            scale_factor=0.3,
            rotation_factor=40.0,
            rotation_prob=0.6,
            flip=True,
            flip_prob=0.5,
            half_body=False,
            half_body_prob=0.3,
            half_body_min_joints=8,
        )
    )
    return d


def train_config(variant: str) -> ml_collections.ConfigDict:
    """SimpleBaseline's schedule for the baseline, the paper's (IV.A) for the others."""
    baseline = variant == "sbn"
    return ml_collections.ConfigDict(
        dict(
            batch_size=64,  # global, over all devices and hosts
            epochs=140.0 if baseline else 150.0,
            learning_rate=1e-3 if baseline else 5e-4,
            decay_epochs=(90, 120),
            decay_factor=0.1,
            warmup_epochs=0.0,
            lr_reference_batch=0,  # > 0: scale the lr by batch_size / lr_reference_batch
            loss="mse" if baseline else "ohkm",  # the paper's "Ours*" uses OHKM, top 8
            ohkm_top_k=8,
            aux_loss_weight=1.0,
            compute_dtype="auto",  # bfloat16 on GPU/TPU, float32 on CPU; params stay float32
            log_every_steps=50,
            checkpoint_every_steps=1000,
            keep_checkpoints=3,
            eval_every_epochs=10,
            max_nonfinite=10,  # stop after this many non-finite updates in a row
            # Several processes agree on a SIGTERM (all-gather) every this many steps and
            # all save there; one process stops at the next step.
            stop_check_every_steps=10,
            sigterm_self_at_step=0,  # > 0: the run sends itself SIGTERM there (tests)
            workers=4,
        )
    )


def build_config(
    dataset: str,
    num_joints: int,
    spec: str | None,
    default_size: tuple[int, int],
    sigma: float = 2.0,
    default_variant: str = "efafnet",
    default_depth: int = 50,
) -> ml_collections.ConfigDict:
    """The full config for one dataset and one 'VARIANT,rDEPTH,HxW' spec."""
    variant, depth, size = parse_spec(spec, default_variant, default_depth, default_size)
    height, width = size
    if height % BACKBONE_STRIDE or width % BACKBONE_STRIDE:
        raise ValueError(
            f"config spec {spec!r}: input size {height}x{width} must be a "
            f"multiple of the backbone stride {BACKBONE_STRIDE}"
        )
    config = ml_collections.ConfigDict()
    config.name = f"{dataset}_{variant}_r{depth}_{height}x{width}"
    config.model = model_config(variant, depth, num_joints)
    config.data = data_config(dataset)
    config.data.crop_hw = (height, width)
    config.data.heatmap_hw = (height // HEATMAP_STRIDE, width // HEATMAP_STRIDE)
    # SimpleBaseline's sigma 2 (its 70.4 AP used it); the paper says 1 pixel.
    config.data.sigma = sigma
    config.train = train_config(variant)
    config.init = ml_collections.ConfigDict(
        dict(
            torch_backbone="",  # torchvision / Res2Net ImageNet state_dict for the backbone
            partial=False,  # allow a backbone that only partly fits (reported as a table)
            checkpoint="",  # a pose checkpoint (orbax) to fine-tune from
            reinit_head=False,  # with checkpoint: keep the head initialised (new keypoint set)
        )
    )
    config.eval = ml_collections.ConfigDict(
        dict(
            batch_size=32,  # per host; a multiple of the local device count
            flip_test=True,
            shift_heatmap=True,  # the reference's 1-px shift of flipped heatmaps
            post_process=True,  # refine the argmax by eval.decoder
            # "quarter_offset" (HRNet, the paper's numbers) or "dark" (docs/evaluation.md "Codecs")
            decoder="quarter_offset",
            # DARK's blur kernel (odd), 11 as DarkPose and mmpose 1.x at sigma 2 and 3;
            # 0: 6 sigma - 1 made odd (17 at sigma 3, mmpose 0.x) (docs/evaluation.md "Codecs")
            dark_kernel=11,
            in_vis_threshold=0.2,  # keypoint scores counted in the box x keypoint rescoring
            oks_threshold=0.9,
            soft_nms=False,
            workers=0,
        )
    )
    config.seed = 0
    return config


class ConfigNotFoundError(FileNotFoundError):
    """A --config that is neither a config file nor a packaged config's name."""


# The packaged config that reads a training workdir's config.json (its spec is the workdir).
WORKDIR_CONFIG = "workdir"


def packaged_config_names() -> list[str]:
    """The dataset configs shipped in efafnet_jax/configs, by name."""
    files = importlib.resources.files("efafnet_jax.configs").iterdir()
    names = (entry.name.removesuffix(".py") for entry in files if entry.name.endswith(".py"))
    return sorted(name for name in names if not name.startswith("_") and name != WORKDIR_CONFIG)


def config_file(name_or_path: str) -> str:
    """`NAME[:spec]` of a packaged config -> `<its file>[:spec]`; a config file's
    `path[:spec]` unchanged (a file of that name wins over a packaged config)."""
    path, colon, spec = name_or_path.partition(":")
    if os.path.isfile(path):
        return name_or_path
    if path in packaged_config_names() or path == WORKDIR_CONFIG:
        packaged = importlib.resources.files("efafnet_jax.configs") / f"{path}.py"
        return f"{packaged}{colon}{spec}"
    if path.endswith(".py") or os.sep in path:
        raise ConfigNotFoundError(f"config file {path!r} does not exist")
    names = ", ".join(packaged_config_names())
    raise ConfigNotFoundError(f"config {path!r} is neither a file nor a packaged config ({names})")


def load_config(name_or_path: str) -> ml_collections.ConfigDict:
    """Loads `NAME[:spec]` (a packaged config) or `path/to/config.py[:spec]` the way the
    commands' --config does."""
    # A --config flag of its own, parsed by config_flags as the commands' is; unlocked,
    # as callers may add keys. config_flags takes --config.KEY overrides from sys.argv
    # unless told the arguments: these, so that the running command's do not leak in.
    argv = ["load_config", f"--config={config_file(name_or_path)}"]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, flag_values=values, lock_config=False, sys_argv=argv
    )
    try:
        values(argv)
    except flags.IllegalFlagValueError as err:
        # config_flags re-raises get_config's ValueError or TypeError inside a flag error
        # whose message embeds a traceback: raise the config's own error instead.
        original = err
        while original.__context__ is not None:
            original = original.__context__
        raise original from None
    return values.config
