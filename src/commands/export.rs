//! `cnn export`: a model for other tools, as an ONNX graph of its whole inference path or as a
//! model file in the current format.

use crate::commands::cli::{ExportArgs, ExportFormat};
use crate::infer::tta;
use crate::store::Model;
use crate::store::atomic::atomic_write;
use crate::store::onnx;
use anyhow::{Result, anyhow};

pub fn run(args: ExportArgs) -> Result<()> {
    let model = Model::load(&args.model)?;
    let shown = args.model.display();
    match args.format {
        ExportFormat::Onnx => {
            let chosen = tta::choose(args.tta, &model);
            let bytes = onnx::export(&model, &chosen.onnx_views())
                .map_err(|e| anyhow!("{shown}: cannot export to ONNX: {e:#}"))?;
            atomic_write(&args.out, |w| Ok(w.write_all(&bytes)?))?;
            println!(
                "{}: ONNX opset {}, {} bytes; input `{}` N×{}, outputs `{}` and `{}`; test-time augmentation {}",
                args.out.display(),
                onnx::OPSET,
                bytes.len(),
                onnx::INPUT,
                crate::tensor::fmt_shape(&model.input),
                onnx::PROBABILITIES,
                onnx::LOGITS,
                chosen.name()
            );
        }
        ExportFormat::Safetensors => {
            if args.tta.is_some() {
                crate::usage!("--tta applies to --format onnx only");
            }
            model.save(&args.out)?;
            println!(
                "{}: model in the safetensors layout (format {}), {} tensors",
                args.out.display(),
                crate::store::container::FORMAT_VERSION,
                model.params.len()
            );
        }
    }
    Ok(())
}
