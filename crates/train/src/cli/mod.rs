//! Command-line interface: argument definitions and dispatch.

mod bench_cmd;
mod eval_cmd;
mod predict_cmd;
mod probe_cmd;
mod setup;
mod train_cmd;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use train::weights_choice::WeightsChoice;

#[derive(Parser, Debug)]
#[command(
    name = "train",
    version,
    about = "Fine-tune a Keras-exact ResNet50 on CIFAR-10",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options of the default `train` command.
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train (the default when no subcommand is given).
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint on the test set.
    Eval(EvalArgs),
    /// Classify image files with a checkpoint (top-3 classes).
    Predict(PredictArgs),
    /// Write layer outputs for an input batch (parity probe).
    Forward(ForwardArgs),
    /// Write the loss and every parameter's gradient for a batch (parity probe).
    Grad(GradArgs),
    /// Time training and inference steps on random data.
    Bench(BenchArgs),
}

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// CIFAR-10 location: binary release dir, image-folder tree, or .tar.gz
    /// [default: data/cifar10, then ../shared/data/cifar10-jpg.tar.gz, in the current directory].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// imagenet (Keras's ImageNet weights, from Keras's cache, ours, or
    /// downloaded and md5-checked) | none (Keras initialization) | a weights
    /// file (.safetensors or Keras .h5/.keras; the head may be absent)
    /// [default: imagenet when it can be had for the model, else none].
    #[arg(long)]
    pub weights: Option<WeightsChoice>,
    /// The recipe the run starts from: keras-tutorial (the tutorial's
    /// fine-tuning: ImageNet weights, Adam 1e-4, batch 64, 10 epochs) or
    /// scratch (Keras initialization to the tutorial's accuracy: Nesterov
    /// SGD, crop + flip, label smoothing, weight EMA, flip TTA). Every
    /// option below replaces the recipe's value; the whole configuration is
    /// printed at the start and saved in config.json.
    #[arg(long, default_value = "keras-tutorial")]
    pub recipe: train::recipe::Recipe,
    /// Epochs to train [default: the recipe's; with --resume, the run's own count unless given].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// [default: the recipe's]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// [default: the recipe's]
    #[arg(long)]
    pub eval_batch_size: Option<usize>,
    /// Learning rate at --batch-size [default: the recipe's, scaled
    /// linearly with --batch-size under the scratch recipe].
    #[arg(long)]
    pub lr: Option<f32>,
    /// adam | sgd | lars (SGD whose every kernel's rate is multiplied by
    /// --trust-coefficient x |w| / |g + wd w|) [default: the recipe's]
    #[arg(long)]
    pub optimizer: Option<String>,
    /// LARS's eta, for --optimizer lars [default: the recipe's: 0.04 under
    /// scratch, else 0.001, TF's and SimCLR's].
    #[arg(long)]
    pub trust_coefficient: Option<f32>,
    /// SGD momentum [default: the recipe's].
    #[arg(long)]
    pub momentum: Option<f32>,
    /// SGD with Nesterov momentum (`--nesterov false` turns a recipe's off).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub nesterov: Option<bool>,
    /// Weight decay (decoupled for Adam, L2 for SGD); biases and BN are exempt [default: the recipe's].
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// constant | cosine | linear (to 0 after the warm-up) | one-cycle[:PCT] |
    /// step:E1,E2 (x0.1 at those epochs) [default: the recipe's]
    #[arg(long)]
    pub lr_schedule: Option<String>,
    /// Linear warm-up length, in epochs (may be fractional) [default: the recipe's].
    #[arg(long)]
    pub warmup_epochs: Option<f32>,
    /// Random crop (4-pixel padding) and horizontal flip (`--augment false` turns a recipe's off).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub augment: Option<bool>,
    /// The crop's padding: zero (black) | reflect [default: the recipe's].
    #[arg(long)]
    pub pad_mode: Option<String>,
    /// Cutout square side in pixels, 0 for none [default: the recipe's].
    #[arg(long)]
    pub cutout: Option<usize>,
    /// epoch (a new order every epoch, Keras's shuffle=True) | once (one
    /// order for every epoch, what seeded Keras 3.15 does) | none (dataset
    /// order, shuffle=False) [default: the recipe's].
    #[arg(long)]
    pub shuffle: Option<String>,
    /// Keras's label_smoothing of the training loss, in [0, 1) [default: the recipe's].
    #[arg(long)]
    pub label_smoothing: Option<f32>,
    /// The classifier's learning rate as a multiple of the schedule's, in
    /// (0, 1000] [default: the recipe's].
    #[arg(long)]
    pub head_lr_scale: Option<f32>,
    /// Keras's global_clipnorm: scale each step's gradients down together to
    /// this global norm when theirs is larger (before weight decay is added);
    /// 0 for no clipping [default: the recipe's].
    #[arg(long)]
    pub global_clipnorm: Option<f32>,
    /// Test-time augmentation of the final evaluation: none | flip |
    /// flip-translate [default: the recipe's].
    #[arg(long)]
    pub tta: Option<String>,
    /// Keep an exponential moving average of the weights with this decay
    /// per update (TF's ExponentialMovingAverage, ramped up over the first
    /// updates), evaluated after every epoch and saved as ema.safetensors;
    /// 0 for none [default: the recipe's].
    #[arg(long)]
    pub ema_decay: Option<f32>,
    /// Update the moving average every this many steps [default: the recipe's, else 1].
    #[arg(long)]
    pub ema_every: Option<usize>,
    /// none | base (feature extraction: train the head only) | 1..5 (freeze the stem and stages up to N)
    #[arg(long)]
    pub freeze: Option<String>,
    /// Train on a seeded random subset of this many images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Evaluate on a seeded random subset of this many test images.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Hold this many training images out (chosen by --seed, after
    /// --train-limit) and evaluate on them after every epoch as val_loss /
    /// val_accuracy, the metrics the callbacks below monitor.
    #[arg(long)]
    pub val_split: Option<usize>,
    /// Metric for --save-best, --early-stopping-patience and
    /// --reduce-lr-patience: val_loss | val_accuracy | loss | accuracy |
    /// ema_val_loss | ema_val_accuracy (those of the EMA of the weights,
    /// whose weights --save-best then saves and --restore-best-weights
    /// restores); losses are minimized, accuracies maximized.
    #[arg(long, default_value = "val_loss")]
    pub monitor: String,
    /// Write the weights of the best epoch (by --monitor) to best.safetensors
    /// in the run directory (Keras's ModelCheckpoint(save_best_only=True)).
    #[arg(long)]
    pub save_best: bool,
    /// Stop after this many epochs in which --monitor did not improve
    /// (Keras's EarlyStopping).
    #[arg(long)]
    pub early_stopping_patience: Option<usize>,
    /// Smallest change of --monitor that counts as an improvement for early stopping.
    #[arg(long, default_value_t = 0.0)]
    pub early_stopping_min_delta: f64,
    /// With early stopping: evaluate the best epoch's weights at the end,
    /// not the last epoch's (the resumable checkpoint stays the last one).
    #[arg(long, requires = "early_stopping_patience")]
    pub restore_best_weights: bool,
    /// Multiply the learning rate by --reduce-lr-factor after this many
    /// epochs in which --monitor did not improve by 1e-4 (Keras's
    /// ReduceLROnPlateau); a factor on top of --lr-schedule.
    #[arg(long)]
    pub reduce_lr_patience: Option<usize>,
    /// What --reduce-lr-patience multiplies the learning rate by, in (0, 1).
    #[arg(long, default_value_t = 0.1)]
    pub reduce_lr_factor: f32,
    /// Learning rate floor for --reduce-lr-patience.
    #[arg(long, default_value_t = 0.0)]
    pub reduce_lr_min_lr: f32,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads [default: all cores, or RAYON_NUM_THREADS].
    #[arg(long)]
    pub threads: Option<usize>,
    /// GEMM operands: fp32 | bf16 (rounded to bf16, accumulated in f32, on
    /// CPUs with AVX512_BF16; weights, batchnorm and the optimizer stay f32)
    /// | auto (bf16 where the CPU has it, else fp32) [default: the recipe's].
    #[arg(long)]
    pub precision: Option<String>,
    /// unit (x / 255, the recipe) | caffe (Keras ImageNet preprocessing: BGR, mean-subtracted)
    #[arg(long)]
    pub preprocess: Option<String>,
    /// Run directory [default: runs/run-<UTC time>-<pid> under the current
    /// directory]. One that already holds a run is refused unless --overwrite.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the run already in --out (its checkpoints and metrics are deleted).
    #[arg(long)]
    pub overwrite: bool,
    /// Continue the run in this directory where it stopped, with its own
    /// config.json; only --epochs (to extend it), --threads and --quiet may
    /// be given with it (any other run option is an error, not ignored).
    #[arg(long, conflicts_with_all = [
        "data", "weights", "batch_size", "eval_batch_size", "lr", "optimizer", "momentum",
        "nesterov", "weight_decay", "trust_coefficient", "lr_schedule", "warmup_epochs", "augment", "freeze",
        "train_limit", "test_limit", "seed", "preprocess", "out", "depths", "widths",
        "stem_filters", "unbiased_moving_variance", "model", "val_split", "monitor", "save_best",
        "early_stopping_patience", "early_stopping_min_delta", "restore_best_weights",
        "reduce_lr_patience", "reduce_lr_factor", "reduce_lr_min_lr", "overwrite", "recipe",
        "pad_mode", "cutout", "shuffle", "label_smoothing", "head_lr_scale", "tta", "ema_decay", "global_clipnorm",
        "ema_every", "bn_momentum", "precision",
    ])]
    pub resume: Option<PathBuf>,
    /// The network: resnet50 | resnet101 | resnet152 | resnet50v2 | resnet101v2 | resnet152v2
    /// (keras.applications' ResNets; --depths, --widths and --stem-filters then adjust it).
    #[arg(long, value_parser = train::model_spec::ModelSpec::keras)]
    pub model: Option<train::model_spec::ModelSpec>,
    /// Blocks per stage, for a smaller network [ResNet50: 3,4,6,3].
    #[arg(long, value_delimiter = ',')]
    pub depths: Option<Vec<usize>>,
    /// Bottleneck widths per stage [ResNet50: 64,128,256,512].
    #[arg(long, value_delimiter = ',')]
    pub widths: Option<Vec<usize>>,
    /// Stem filters [ResNet50: 64].
    #[arg(long)]
    pub stem_filters: Option<usize>,
    /// Keras's BatchNormalization momentum: moving = momentum * moving +
    /// (1 - momentum) * batch, in [0, 1) [default: the recipe's; Keras's 0.99].
    #[arg(long)]
    pub bn_momentum: Option<f32>,
    /// Update the BN moving variance with the unbiased batch variance (Keras 2) instead of the biased one (Keras 3).
    #[arg(long)]
    pub unbiased_moving_variance: bool,
    /// No progress bars (one line per epoch only).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run directory or model file (.safetensors, or a Keras .h5).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub test_limit: Option<usize>,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// unit | caffe [default: the run's, else unit]
    #[arg(long)]
    pub preprocess: Option<String>,
    /// Test-time augmentation: none | flip (image and mirror) |
    /// flip-translate (airbench's 6 views), as for `train --tta`.
    #[arg(long, default_value = "none")]
    pub tta: train::evaluate::Tta,
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Run directory or model file (.safetensors, or a Keras .h5).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// 32x32 JPEG or PNG files.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// unit | caffe [default: the run's, else unit]
    #[arg(long)]
    pub preprocess: Option<String>,
}

#[derive(Args, Debug)]
pub struct ForwardArgs {
    #[arg(long)]
    pub weights: PathBuf,
    /// safetensors file holding the NHWC batch as tensor `x`.
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long)]
    pub output: PathBuf,
    /// Keras layer names to write.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "conv1_relu,pool1_pool,conv2_block1_out,conv3_block4_out,conv4_block6_out,conv5_block3_out"
    )]
    pub layers: Vec<String>,
    /// BatchNorm in training mode (batch statistics).
    #[arg(long)]
    pub training: bool,
}

#[derive(Args, Debug)]
pub struct GradArgs {
    #[arg(long)]
    pub weights: PathBuf,
    #[arg(long)]
    pub input: PathBuf,
    /// safetensors file holding integer labels as tensor `y` (any float or int dtype).
    #[arg(long)]
    pub labels: PathBuf,
    #[arg(long)]
    pub output: PathBuf,
    /// BatchNorm in inference mode (what a frozen network sees).
    #[arg(long)]
    pub frozen_bn: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub batch_size: u16,
    /// Timed training steps (after warm-up); the median is reported.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub steps: u16,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Inference batch sizes to time.
    #[arg(long, value_delimiter = ',', default_value = "64,256", value_parser = clap::value_parser!(u16).range(1..))]
    pub inference_batches: Vec<u16>,
    /// Print the per-op profile of one training step.
    #[arg(long)]
    pub profile: bool,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Time only one of the two.
    #[arg(long, value_parser = ["training", "inference"])]
    pub only: Option<String>,
    /// The network, as for `train --model`.
    #[arg(long, default_value = "resnet50", value_parser = train::model_spec::ModelSpec::keras)]
    pub model: train::model_spec::ModelSpec,
    /// GEMM operands, as for `train --precision`: fp32 | bf16 | auto.
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// The optimizer whose update the training steps include: adam (the
    /// tutorial's) | sgd (Nesterov momentum 0.9, weight decay 5e-4) | lars
    /// (the scratch recipe's: that SGD with trust coefficient 0.04).
    #[arg(long, default_value = "adam", value_parser = ["adam", "sgd", "lars"])]
    pub optimizer: String,
    /// Also keep an EMA of the weights, updated after every k-th step (the
    /// decay is 0.999^k, the horizon of the scratch recipe's); its updates
    /// are then in the timed steps.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub ema_every: Option<u16>,
}

/// A training run stopped by SIGINT, SIGTERM or SIGHUP: after saving its
/// checkpoint (resumable, but not finished), or while loading its data,
/// before anything was trained (`saved` false). Either way the process
/// exits with [`Interrupted::EXIT_CODE`] rather than 0.
#[derive(Debug)]
pub struct Interrupted {
    /// What to tell the user: where it saved and how to continue.
    pub resume_hint: String,
    /// Whether a checkpoint was saved on the way out.
    pub saved: bool,
}

impl Interrupted {
    /// 128 + SIGINT, whichever of the three signals arrived (the shell's
    /// convention for a job stopped by Ctrl-C).
    pub const EXIT_CODE: u8 = 130;
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.resume_hint)
    }
}

impl std::error::Error for Interrupted {}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => train_cmd::run(cli.train),
        Some(Command::Train(a)) => train_cmd::run(*a),
        Some(Command::Eval(a)) => eval_cmd::run(a),
        Some(Command::Predict(a)) => predict_cmd::run(a),
        Some(Command::Forward(a)) => probe_cmd::forward(a),
        Some(Command::Grad(a)) => probe_cmd::grad(a),
        Some(Command::Bench(a)) => bench_cmd::run(a),
    }
}
