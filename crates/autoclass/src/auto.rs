//! AutoModel and `AutoModelFor<Task>`: config → registry → weights → the right model.

use candle_core::{DType, Device};

use crate::config::{Config, ConfigOverrides};
use crate::error::Result;
use crate::hub::{Checkpoint, HubOptions};
use crate::kernels;
use crate::models::{Batch, ForwardOptions, ModelOutput, TaskModel};
use crate::registry::{unsupported_task, Task};
use crate::weights::{
    open_checkpoint_weights_with, DTypeChoice, FrameworkChoice, LoadReport, VarBuilder,
};

/// The keyword arguments of `from_pretrained` for models.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Where to look: revision, subfolder, cache, offline.
    pub hub: HubOptions,
    /// Config overrides (`num_labels`, `id2label`, ...).
    pub config: ConfigOverrides,
    /// Weight dtype; f32 unless asked.
    pub dtype: DTypeChoice,
    /// Device; CPU when `None`.
    pub device: Option<Device>,
    /// Load from `tf_model.h5` even when PyTorch weights exist (transformers 4.x's `from_tf=True`).
    pub from_tf: bool,
    /// Load from `flax_model.msgpack` even when PyTorch weights exist (transformers 4.x's
    /// `from_flax=True`).
    pub from_flax: bool,
}

impl LoadOptions {
    /// The `from_tf` / `from_flax` choice as the weights module takes it.
    pub fn frameworks(&self) -> FrameworkChoice {
        FrameworkChoice {
            from_tf: self.from_tf,
            from_flax: self.from_flax,
        }
    }

    /// Selects backbone stages by index (`out_indices=(1,)`); clears any saved `out_features`.
    pub fn with_out_indices(mut self, indices: &[i64]) -> Self {
        self.config
            .values
            .insert("out_indices".into(), serde_json::json!(indices));
        self.config.values.remove("out_features");
        self
    }

    /// Selects backbone stages by name (`out_features=["stage2"]`); clears any saved `out_indices`.
    pub fn with_out_features(mut self, features: &[&str]) -> Self {
        self.config
            .values
            .insert("out_features".into(), serde_json::json!(features));
        self.config.values.remove("out_indices");
        self
    }
}

/// A loaded model: the config, the task model and the load report.
pub struct Model {
    inner: Box<dyn TaskModel>,
    config: Config,
    task: Task,
    report: LoadReport,
    device: Device,
    /// The dtype float outputs are cast to when the model computes in another (bf16 on AMX).
    output_dtype: Option<DType>,
}

impl Model {
    /// Loads `name_or_path` for `task` (what every `AutoModelFor*` does).
    pub fn from_pretrained(name_or_path: &str, task: Task, options: &LoadOptions) -> Result<Self> {
        let checkpoint = Checkpoint::resolve(name_or_path, &options.hub)?;
        let config = Config::from_checkpoint(&checkpoint, &options.config)?;
        Self::from_checkpoint(&checkpoint, config, task, options)
    }

    /// Loads a model for `task` from an already resolved checkpoint and config.
    pub fn from_checkpoint(
        checkpoint: &Checkpoint,
        config: Config,
        task: Task,
        options: &LoadOptions,
    ) -> Result<Self> {
        let arch = config.architecture()?;
        let class_name = arch
            .class_name(task)
            .ok_or_else(|| unsupported_task(arch, task))?;
        let store = open_checkpoint_weights_with(checkpoint, options.frameworks())?;
        let dtype = options.dtype.resolve(config.dtype.as_deref(), &store);
        let device = options.device.clone().unwrap_or(Device::Cpu);
        // bf16 on an AMX CPU: bf16 Linear layers on AMX, everything else in f32, bf16 outputs.
        let amx_bf16 = dtype == DType::BF16 && device.is_cpu() && kernels::amx::available();
        let (dtype, output_dtype) = if amx_bf16 {
            (DType::F32, Some(DType::BF16))
        } else {
            (dtype, None)
        };
        let vb = VarBuilder::new(store, dtype, device.clone(), arch.base_model_prefix())
            .with_int8_linear(options.dtype == DTypeChoice::Int8)
            .with_bf16_linear(amx_bf16);
        let inner = arch.load(task, &config, &vb)?;
        let report = vb.report();
        report.warn(class_name, checkpoint.name());
        Ok(Model {
            inner,
            config,
            task,
            report,
            device,
            output_dtype,
        })
    }

    /// `model(**batch)`.
    pub fn forward(&self, batch: &Batch) -> Result<ModelOutput> {
        self.forward_with(batch, &ForwardOptions::default())
    }

    /// `model(**batch, output_hidden_states=..., output_attentions=...)`.
    pub fn forward_with(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        let out = self.inner.forward(batch, options)?;
        match self.output_dtype {
            Some(dtype) => out.to_float_dtype(dtype),
            None => Ok(out),
        }
    }

    /// The config the model was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The task the model was loaded for.
    pub fn task(&self) -> Task {
        self.task
    }

    /// transformers' class name (`DistilBertForSequenceClassification`).
    pub fn class_name(&self) -> &'static str {
        self.inner.class_name()
    }

    /// Missing, unexpected and mismatched tensors (`output_loading_info=True`).
    pub fn loading_info(&self) -> &LoadReport {
        &self.report
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }
}

macro_rules! auto_model {
    ($(#[$doc:meta])* $name:ident, $task:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl $name {
            /// Loads the checkpoint with default options (f32, CPU).
            pub fn from_pretrained(name_or_path: &str) -> Result<Model> {
                Model::from_pretrained(name_or_path, $task, &LoadOptions::default())
            }

            /// Loads the checkpoint with `options` (revision, dtype, config overrides, ...).
            pub fn from_pretrained_with(name_or_path: &str, options: &LoadOptions) -> Result<Model> {
                Model::from_pretrained(name_or_path, $task, options)
            }
        }
    };
}

auto_model!(
    /// `AutoModel`: the bare model (`BertModel`, `DistilBertModel`).
    AutoModel,
    Task::Base
);
auto_model!(
    /// `AutoModelForSequenceClassification`.
    AutoModelForSequenceClassification,
    Task::SequenceClassification
);
auto_model!(
    /// `AutoModelForTokenClassification`.
    AutoModelForTokenClassification,
    Task::TokenClassification
);
auto_model!(
    /// `AutoModelForMaskedLM`.
    AutoModelForMaskedLM,
    Task::MaskedLm
);
auto_model!(
    /// `AutoModelForQuestionAnswering`.
    AutoModelForQuestionAnswering,
    Task::QuestionAnswering
);
auto_model!(
    /// `AutoModelForImageClassification`.
    AutoModelForImageClassification,
    Task::ImageClassification
);
auto_model!(
    /// `AutoModelForAudioClassification`.
    AutoModelForAudioClassification,
    Task::AudioClassification
);
auto_model!(
    /// `AutoModelForCTC`.
    AutoModelForCTC,
    Task::Ctc
);
auto_model!(
    /// `AutoBackbone`: feature maps of the stages chosen with
    /// [`LoadOptions::with_out_indices`] or [`LoadOptions::with_out_features`].
    AutoBackbone,
    Task::Backbone
);

/// Checks a task name against an architecture without loading weights.
pub fn check_task(config: &Config, task: Task) -> Result<()> {
    let arch = config.architecture()?;
    arch.class_name(task)
        .map(|_| ())
        .ok_or_else(|| unsupported_task(arch, task))
}
