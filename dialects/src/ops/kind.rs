//! `OpKind`: every registered op as an enum variant, so that engines and passes match ops
//! exhaustively and the compiler says where a new op is not handled.

/// One variant per op of the registry (`nn` first, then `quant`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// `nn.const`
    Const,
    /// `nn.conv2d`
    Conv2d,
    /// `nn.batch_norm`
    BatchNorm,
    /// `nn.relu`
    Relu,
    /// `nn.clip`
    Clip,
    /// `nn.add`
    Add,
    /// `nn.sub`
    Sub,
    /// `nn.mul`
    Mul,
    /// `nn.div`
    Div,
    /// `nn.avg_pool2d`
    AvgPool2d,
    /// `nn.max_pool2d`
    MaxPool2d,
    /// `nn.global_avg_pool`
    GlobalAvgPool,
    /// `nn.dense`
    Dense,
    /// `nn.matmul`
    MatMul,
    /// `nn.flatten`
    Flatten,
    /// `nn.reshape`
    Reshape,
    /// `nn.transpose`
    Transpose,
    /// `nn.concat`
    Concat,
    /// `nn.softmax`
    Softmax,
    /// `nn.pad`
    Pad,
    /// `nn.sigmoid`
    Sigmoid,
    /// `nn.hardsigmoid`
    HardSigmoid,
    /// `nn.hardswish`
    HardSwish,
    /// `quant.quantize`
    Quantize,
    /// `quant.dequantize`
    Dequantize,
    /// `quant.conv2d`
    QuantConv2d,
    /// `quant.dense`
    QuantDense,
    /// `quant.add`
    QuantAdd,
    /// `quant.avg_pool2d`
    QuantAvgPool2d,
    /// `quant.max_pool2d`
    QuantMaxPool2d,
    /// `quant.global_avg_pool`
    QuantGlobalAvgPool,
    /// `quant.concat`
    QuantConcat,
}

impl OpKind {
    /// Every kind, in the order above.
    pub const ALL: [OpKind; 32] = [
        OpKind::Const,
        OpKind::Conv2d,
        OpKind::BatchNorm,
        OpKind::Relu,
        OpKind::Clip,
        OpKind::Add,
        OpKind::Sub,
        OpKind::Mul,
        OpKind::Div,
        OpKind::AvgPool2d,
        OpKind::MaxPool2d,
        OpKind::GlobalAvgPool,
        OpKind::Dense,
        OpKind::MatMul,
        OpKind::Flatten,
        OpKind::Reshape,
        OpKind::Transpose,
        OpKind::Concat,
        OpKind::Softmax,
        OpKind::Pad,
        OpKind::Sigmoid,
        OpKind::HardSigmoid,
        OpKind::HardSwish,
        OpKind::Quantize,
        OpKind::Dequantize,
        OpKind::QuantConv2d,
        OpKind::QuantDense,
        OpKind::QuantAdd,
        OpKind::QuantAvgPool2d,
        OpKind::QuantMaxPool2d,
        OpKind::QuantGlobalAvgPool,
        OpKind::QuantConcat,
    ];

    /// The registered name, `dialect.op`.
    pub const fn name(self) -> &'static str {
        match self {
            OpKind::Const => "nn.const",
            OpKind::Conv2d => "nn.conv2d",
            OpKind::BatchNorm => "nn.batch_norm",
            OpKind::Relu => "nn.relu",
            OpKind::Clip => "nn.clip",
            OpKind::Add => "nn.add",
            OpKind::Sub => "nn.sub",
            OpKind::Mul => "nn.mul",
            OpKind::Div => "nn.div",
            OpKind::AvgPool2d => "nn.avg_pool2d",
            OpKind::MaxPool2d => "nn.max_pool2d",
            OpKind::GlobalAvgPool => "nn.global_avg_pool",
            OpKind::Dense => "nn.dense",
            OpKind::MatMul => "nn.matmul",
            OpKind::Flatten => "nn.flatten",
            OpKind::Reshape => "nn.reshape",
            OpKind::Transpose => "nn.transpose",
            OpKind::Concat => "nn.concat",
            OpKind::Softmax => "nn.softmax",
            OpKind::Pad => "nn.pad",
            OpKind::Sigmoid => "nn.sigmoid",
            OpKind::HardSigmoid => "nn.hardsigmoid",
            OpKind::HardSwish => "nn.hardswish",
            OpKind::Quantize => "quant.quantize",
            OpKind::Dequantize => "quant.dequantize",
            OpKind::QuantConv2d => "quant.conv2d",
            OpKind::QuantDense => "quant.dense",
            OpKind::QuantAdd => "quant.add",
            OpKind::QuantAvgPool2d => "quant.avg_pool2d",
            OpKind::QuantMaxPool2d => "quant.max_pool2d",
            OpKind::QuantGlobalAvgPool => "quant.global_avg_pool",
            OpKind::QuantConcat => "quant.concat",
        }
    }

    /// The kind registered as `name`.
    pub fn from_name(name: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether it belongs to the `quant` dialect (integer values in or out).
    pub fn is_quant(self) -> bool {
        self.name().starts_with("quant.")
    }
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
