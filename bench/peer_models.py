"""What bench/compare.py and bench/qdq_interop.py share about the peers: ONNX Runtime's and NNCF's
QDQ models of a float model, and ONNX Runtime's outputs of a model."""
import os
import time

import numpy as np


def ort_logits(path, x, kernels=False):
    """ONNX Runtime's outputs of a QDQ model. By default with graph optimizations off, so the QDQ
    pairs run as float: exactly the quantization the tool chose. With `kernels`, ONNX Runtime fuses
    them into its int8 kernels, which on AVX2 CPUs without VNNI saturate u8 x s8 pair sums to 16 bits
    (vpmaddubsw) and lose accuracy that the quantization itself does not."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    opts.log_severity_level = 3
    if not kernels:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 32]})[0] for i in range(0, len(x), 32)])


def ort_model(onnx_path, calib, out, per_channel, tmp):
    """ONNX Runtime's `quantize_static` QDQ model (MinMax, u8 activations, i8 weights, after
    `quant_pre_process`) written to `out`; returns the seconds the quantization took."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = os.path.join(tmp, "pre_" + os.path.basename(onnx_path))
    if not os.path.exists(pre):
        quant_pre_process(onnx_path, pre)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    t0 = time.perf_counter()
    quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    return time.perf_counter() - t0


def nncf_model(onnx_path, calib, out, per_channel, bias_correction):
    """NNCF's `nncf.quantize` QDQ model (ONNX backend, default preset; bias correction "none",
    "fast" or "full") written to `out`; returns the seconds the quantization took."""
    import nncf
    import onnx

    model = onnx.load(onnx_path)
    dataset = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))], lambda x: {"input": x})
    adv = nncf.AdvancedQuantizationParameters(
        disable_bias_correction=bias_correction == "none",
        weights_quantization_params=nncf.quantization.advanced_parameters.QuantizationParameters(per_channel=per_channel),
    )
    t0 = time.perf_counter()
    q = nncf.quantize(model, dataset, subset_size=len(calib), fast_bias_correction=bias_correction != "full", advanced_parameters=adv)
    dt = time.perf_counter() - t0
    onnx.save(q, out)
    return dt
