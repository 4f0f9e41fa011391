using ModelCompression.Numerics;
using ModelCompression.Calibration;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;
using ModelCompression.Quantization;
using AttributeType = ModelCompression.Onnx.Protobuf.AttributeProto.Types.AttributeType;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Int4;

/// <summary>
/// <c>Quantize=int4</c>: weight-only 4-bit quantization in blocks of <see cref="Int4Options.Int4BlockSize"/> inputs
/// (<see cref="Int4Quantizer"/>: RTN, or GPTQ on calibration data, layer stage after layer stage so each sees the
/// inputs the already-quantized layers before it produce). Stored forms:
/// <list type="bullet">
/// <item>MatMul/Gemm → ONNX Runtime's <c>com.microsoft.MatMulNBits</c> (what its quantizer writes): packed codes
/// [N, blocks, block/2], scales, packed zero points when asymmetric, Gemm's bias as the op's bias input.
/// <c>accuracy_level</c> 4 lets the CPU kernel quantize the activations to int8 per block and run an int8 dot
/// product, its fast path; the weights are the same.</item>
/// <item>Conv → int4/uint4 blocks (opset 21) expanded to the float kernel by constant ops ONNX Runtime folds at load
/// (<see cref="WriteFoldedBlocks"/>): a size win only, the conv runs in float.</item>
/// </list>
/// </summary>
public sealed class Int4Pass : ICompressionPass
{
    /// <summary>MatMulNBits accuracy_level: 4 = int8 compute (activations quantized per block at run time), the fast CPU path.</summary>
    public const int AccuracyLevel = 4;
    private const string MicrosoftDomain = "com.microsoft";

    public string Name => "int4";
    public PassStage Stage => PassStage.Quantize;
    public IReadOnlyList<OptionsGroup> Reads => [QuantizationOptions.Group, Int4Options.Group];
    public bool IsRequested(CompressionPolicy policy) => policy.AnyLayer<QuantizationOptions>(q => q.Quantize == QuantizeMode.Int4);

    private sealed record Target(WeightedLayer Layer, Int4Options Options, Int4Method Method, string? Why);

    public void Apply(CompressionContext context)
    {
        var graph = context.Graph;
        var calibrated = context.HasCalibration;
        var targets = new List<Target>();
        string? opsetReason = null;
        var opsetTried = false;
        var warned = new HashSet<string>(StringComparer.Ordinal);
        void LeaveFloat(WeightedLayer layer, string reason)
        {
            context.Record(new LayerRecord
            {
                Layer = layer.Name, Op = layer.OpType, Technique = "int4", Shape = layer.WeightShape,
                ParametersBefore = layer.Parameters, ParametersAfter = layer.Parameters, Bits = 32, Note = "left in float: " + reason,
            });
            // One warning per reason: a whole family of layers is usually left for the same one.
            if (warned.Add(reason)) context.Warn(DiagnosticCodes.LayerLeftInFloat, $"int4: layer '{layer.Name}' ({layer.OpType}) left in float: {reason}");
        }
        foreach (var layer in WeightedLayer.FindAll(graph))
        {
            if (context.Options<QuantizationOptions>(layer.Node).Quantize != QuantizeMode.Int4) continue;
            var options = context.Options<Int4Options>(layer.Node);
            if (context.IsExcluded(layer.Node)) { LeaveFloat(layer, "excluded by policy"); continue; }
            if (graph.GraphInputNames.Contains(layer.Weight.Name) || layer.Graph.GraphInputNames.Contains(layer.Weight.Name)) { LeaveFloat(layer, "the weight is also a graph input (it can be fed at run time)"); continue; }
            if (layer.OpType == "Gemm" && (Attr(layer.Node, "alpha", 1) != 1 || Attr(layer.Node, "beta", 1) != 1)) { LeaveFloat(layer, "Gemm with alpha or beta other than 1"); continue; }
            if (layer.Layout == WeightLayout.Convolution)
            {
                if (!opsetTried) { opsetReason = Int4Opset.Raise(context.Model); opsetTried = true; }
                if (opsetReason is not null) { LeaveFloat(layer, opsetReason); continue; }
            }
            var method = options.MethodFor(calibrated);
            string? why = null;
            if (method == Int4Method.Gptq && layer.InSubgraph) (method, why) = (Int4Method.Rtn, WeightedLayer.SubgraphReason);
            else if (method == Int4Method.Gptq && layer.Layout == WeightLayout.Convolution && layer.Group != 1) (method, why) = (Int4Method.Rtn, "grouped conv (GPTQ's input statistics need group=1)");
            targets.Add(new Target(layer, options, method, why));
        }
        if (targets.Count == 0)
        {
            context.Warn(DiagnosticCodes.NothingToCompress, "int4: no Conv/Gemm/MatMul layer with a constant float weight can be quantized");
            return;
        }

        // Each layer is written in its final form as soon as it is quantized: calibrated stages then measure their
        // inputs on the model as it will run, and no float copy of a quantized layer is held. Round-to-nearest layers
        // go first, so the calibrated stages see them.
        var records = new Dictionary<WeightedLayer, LayerRecord>();
        void Write(Target target, (Int4Weights Weights, string Note, double Error) result)
        {
            var (layer, weights) = (target.Layer, result.Weights);
            var storage = layer.Layout == WeightLayout.Convolution ? WriteFoldedBlocks(layer, weights) : WriteMatMulNBits(context, layer, weights);
            records[layer] = new LayerRecord
            {
                Layer = layer.Name, Op = layer.OpType, Technique = "int4", Shape = layer.WeightShape,
                ParametersBefore = layer.Parameters, ParametersAfter = layer.Parameters, Bits = 4, ReconstructionError = result.Error,
                Note = $"{result.Note}; block {weights.BlockSize}, {(weights.Symmetric ? "symmetric" : "asymmetric")}; {storage}",
            };
        }
        var gptq = targets.Where(t => t.Method == Int4Method.Gptq).ToList();
        foreach (var target in targets.Where(t => t.Method == Int4Method.Rtn)) Write(target, Rtn(context, target));
        if (gptq.Count > 0)
        {
            var capture = new LayerCapture(context, Name);
            var stages = LayerCapture.Stages(graph, gptq.Select(t => t.Layer).ToList());
            foreach (var stage in stages.Distinct().Order())
            {
                context.Cancellation.ThrowIfCancellationRequested();
                capture.ReportStage(stage, stages.Max() + 1);
                var ready = gptq.Where((_, k) => stages[k] == stage).ToList();
                var stats = capture.InputGrams(ready.Select(t => t.Layer).ToList());
                for (var k = 0; k < ready.Count; k++)
                {
                    var (layer, options) = (ready[k].Layer, ready[k].Options);
                    var w = layer.ReadMatrix(context.Model);
                    // XᵀX is read in place from the statistics (their leading block), not copied: 134 MB at 4096 inputs.
                    var (moments, stride) = (stats[k].Moments, layer.InFeatures + 1);
                    var result = Int4Quantizer.Gptq(w, layer.OutFeatures, layer.InFeatures, moments, options.Int4BlockSize, options.Int4Symmetric, options.Int4Damping, stride);
                    if (result is not { } r)
                    {
                        Write(ready[k], Rtn(context, ready[k] with { Why = "the input second moments on the calibration data are singular or not finite" }));
                        continue;
                    }
                    var dequantized = r.Weights.Dequantize();
                    var rtn = Int4Quantizer.Rtn(w, layer.OutFeatures, layer.InFeatures, options.Int4BlockSize, options.Int4Symmetric).Dequantize();
                    var errors = DenseMath.RelativeOutputErrors(w, [dequantized, rtn], layer.OutFeatures, layer.InFeatures, moments, stride);
                    var (error, rtnError) = (errors[0], errors[1]);
                    Write(ready[k], (r.Weights, $"gptq (round to nearest: {rtnError:0.####}); error = ‖ΔW·x‖/‖W·x‖ on {stats[k].Rows} calibration rows; damping {r.Damping:0.###}", error));
                    context.Model.ReleasePages(layer.Weight);
                    DenseMath.ReleaseWorkingMemory(layer.InFeatures);
                }
                context.ReleaseStageMemory();
            }
        }
        foreach (var target in targets) context.Record(records[target.Layer]);
    }

    private static (Int4Weights, string, double) Rtn(CompressionContext context, Target target)
    {
        var layer = target.Layer;
        // Read in place, in the stored layout: [out, in] row by row, MatMul's [in, out] by sweeps of a block's rows.
        var (q, error) = layer.StoredOutIn
            ? Int4Quantizer.RtnWithError(layer.StoredFloats(context.Model), layer.OutFeatures, layer.InFeatures, target.Options.Int4BlockSize, target.Options.Int4Symmetric)
            : Int4Quantizer.RtnInOut(layer.StoredFloats(context.Model), layer.OutFeatures, layer.InFeatures, target.Options.Int4BlockSize, target.Options.Int4Symmetric);
        context.Model.ReleasePages(layer.Weight);
        var note = target.Why is null ? "rtn; error = ‖ΔW‖/‖W‖" : $"rtn ({target.Why}); error = ‖ΔW‖/‖W‖";
        return (q, note, error);
    }

    /// <summary>
    /// The layer becomes MatMulNBits (A, B, scales, zero_points, g_idx = none, bias) with B [N, blocks, block/2]:
    /// row n's codes for inputs k, two per byte, the first in the low nibble; a last partial block padded with the
    /// zero point. Zero points are packed the same way, ⌈blocks/2⌉ bytes per row; symmetric blocks leave them out
    /// (the op's default is 8).
    /// </summary>
    private static string WriteMatMulNBits(CompressionContext context, WeightedLayer layer, Int4Weights q)
    {
        var graph = layer.Graph;
        var node = layer.Node;
        int n = q.Rows, k = q.Cols, blocks = q.Blocks, blob = q.BlockSize / 2;
        var packed = q.Packed ?? new byte[n * blocks * blob];
        // Unless the quantizer wrote them packed: rows are independent, packed in parallel, each byte written by one row's loop (deterministic).
        if (q.Packed is null) Parallel.For(0, n, r =>
        {
            var codes = q.Codes.AsSpan(r * k, k);
            var target = packed.AsSpan(r * blocks * blob, blocks * blob);
            var i = 0;
            for (; i + 1 < k; i += 2) target[i >> 1] = (byte)(codes[i] | codes[i + 1] << 4);
            for (; i < blocks * q.BlockSize; i++)
            {
                var code = i < k ? codes[i] : q.ZeroPoints[r * blocks + i / q.BlockSize];
                target[i >> 1] |= (byte)(code << (i % 2 * 4));
            }
        });
        var prefix = layer.Weight.Name + "_int4";
        // The packed array is this weight's alone from here on: the tensor wraps it (no second copy).
        var b = Tensors.Wrap(graph.FreshName(prefix), [n, blocks, blob], DataType.Uint8, packed);
        var scales = Tensors.FromFloats(graph.FreshName(prefix + "_scales"), [n * blocks], q.Scales);
        var inputs = new List<string> { node.Input[0], b.Name, scales.Name };
        graph.SetInitializer(b);
        graph.SetInitializer(scales);
        if (!q.Symmetric)
        {
            var rowBytes = (blocks + 1) / 2;
            var zeros = new byte[n * rowBytes];
            for (var r = 0; r < n; r++)
                for (var j = 0; j < blocks; j++)
                    zeros[r * rowBytes + j / 2] |= (byte)(q.ZeroPoints[r * blocks + j] << (j % 2 * 4));
            var zp = Tensors.FromUInt8s(graph.FreshName(prefix + "_zero_points"), [n * rowBytes], zeros);
            graph.SetInitializer(zp);
            inputs.Add(zp.Name);
        }

        // Gemm's C: a constant [N] (or [1, N]) bias is the op's own bias input; anything else an Add after it.
        var output = node.Output[0];
        NodeProto? add = null;
        if (layer.BiasName is { } c)
        {
            if (graph.Initializer(c) is { DataType: (int)DataType.Float } bias && bias.Dims.Aggregate(1L, (x, y) => x * y) == n && bias.Dims[^1] == n && graph.Root.UsesEverywhere(c) == 1)
            {
                if (bias.Dims.Count != 1)
                {
                    graph.RemoveInitializer(c);
                    graph.SetInitializer(Tensors.FromFloats(c, [n], context.Model.ReadFloats(bias)));
                }
                while (inputs.Count < 5) inputs.Add("");
                inputs.Add(c);
            }
            else
            {
                output = graph.FreshName(output + "_matmul");
                add = new NodeProto { OpType = "Add", Name = graph.FreshName(layer.Name + "_bias"), Input = { output, c }, Output = { node.Output[0] } };
            }
        }
        var matmul = new NodeProto { OpType = "MatMulNBits", Domain = MicrosoftDomain, Name = node.Name.Length > 0 ? node.Name : graph.FreshName(layer.Name), Input = { inputs }, Output = { output } };
        matmul.Attribute.Add(Int("K", k));
        matmul.Attribute.Add(Int("N", n));
        matmul.Attribute.Add(Int("bits", 4));
        matmul.Attribute.Add(Int("block_size", q.BlockSize));
        matmul.Attribute.Add(Int("accuracy_level", AccuracyLevel));
        graph.RemoveInitializer(layer.Weight.Name);
        if (add is null) graph.ReplaceNode(node, matmul);
        else graph.ReplaceNode(node, matmul, add);
        if (!context.Model.Proto.OpsetImport.Any(o => o.Domain == MicrosoftDomain))
            context.Model.Proto.OpsetImport.Add(new OperatorSetIdProto { Domain = MicrosoftDomain, Version = 1 });
        return $"MatMulNBits (accuracy_level {AccuracyLevel}: int8 compute)";
    }

    /// <summary>
    /// The conv weight as 4-bit codes [out, blocks, block] (symmetric: int4 codes − 8; else uint4 codes and uint4
    /// zero points [out, blocks, 1]; a last partial block padded), float scales [out, blocks, 1], and
    /// Cast → (Sub zero point) → Mul scale → Reshape [out, padded] → (Slice the padding off) → Reshape to the kernel,
    /// under the weight's name: what a blocked DequantizeLinear computes, spelled with ops ONNX Runtime constant-folds
    /// when it loads the model (it keeps DequantizeLinear nodes unfolded for its QDQ fusions, and a blocked int4 one
    /// then runs at every inference: measured 10× slower on the ResNet at batch 1). The conv runs in float: smaller
    /// file, same speed.
    /// </summary>
    private static string WriteFoldedBlocks(WeightedLayer layer, Int4Weights q)
    {
        var graph = layer.Graph;
        var name = layer.Weight.Name;
        var prefix = name + "_int4";
        int rows = q.Rows, blocks = q.Blocks, block = q.BlockSize, padded = blocks * block;
        var codes = new sbyte[rows * padded];
        var unpacked = q.UnpackedCodes();
        for (var r = 0; r < rows; r++)
            for (var c = 0; c < padded; c++)
            {
                var code = c < q.Cols ? unpacked[r * q.Cols + c] : q.ZeroPoints[r * blocks + c / block];
                codes[r * padded + c] = (sbyte)(q.Symmetric ? code - 8 : code);
            }
        var stored = Tensors.Create<byte>(graph.FreshName(prefix), [rows, blocks, block], q.Symmetric ? DataType.Int4 : DataType.Uint4, Onnx.Int4.Pack(codes));
        var scales = Tensors.FromFloats(graph.FreshName(prefix + "_scales"), [rows, blocks, 1], q.Scales);
        var initializers = new List<TensorProto> { stored, scales };
        var nodes = new List<NodeProto>();
        string Add(string op, string[] inputs, params AttributeProto[] attributes)
        {
            var output = graph.FreshName($"{prefix}_{op.ToLowerInvariant()}");
            var node = new NodeProto { OpType = op, Name = output, Input = { inputs }, Output = { output } };
            node.Attribute.Add(attributes);
            nodes.Add(node);
            return output;
        }
        var value = Add("Cast", [stored.Name], Int("to", (long)DataType.Float));
        if (!q.Symmetric)
        {
            var zeros = Tensors.Create<byte>(graph.FreshName(prefix + "_zero_points"), [rows, blocks, 1], DataType.Uint4, Onnx.Int4.Pack(Array.ConvertAll(q.ZeroPoints, z => (sbyte)z)));
            initializers.Add(zeros);
            value = Add("Sub", [value, Add("Cast", [zeros.Name], Int("to", (long)DataType.Float))]);
        }
        value = Add("Mul", [value, scales.Name]);
        var flat = Tensors.FromInt64s(graph.FreshName(prefix + "_flat"), [2], [rows, padded]);
        initializers.Add(flat);
        value = Add("Reshape", [value, flat.Name]);
        if (padded != q.Cols)
        {
            var starts = Tensors.FromInt64s(graph.FreshName(prefix + "_starts"), [1], [0]);
            var ends = Tensors.FromInt64s(graph.FreshName(prefix + "_ends"), [1], [q.Cols]);
            var axes = Tensors.FromInt64s(graph.FreshName(prefix + "_axes"), [1], [1]);
            initializers.AddRange([starts, ends, axes]);
            value = Add("Slice", [value, starts.Name, ends.Name, axes.Name]);
        }
        var shape = Tensors.FromInt64s(graph.FreshName(prefix + "_shape"), [layer.WeightShape.Length], layer.WeightShape);
        initializers.Add(shape);
        nodes.Add(new NodeProto { OpType = "Reshape", Name = graph.FreshName(prefix + "_kernel"), Input = { value, shape.Name }, Output = { name } });
        graph.RemoveInitializer(name);
        foreach (var t in initializers) graph.SetInitializer(t);
        foreach (var node in nodes) graph.InsertBefore(layer.Node, node);
        return $"{(q.Symmetric ? "int4" : "uint4")} blocks expanded by constant ops ONNX Runtime folds at load (opset 21): smaller, not faster";
    }

    private static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeType.Int, I = value };

    private static float Attr(NodeProto node, string name, float fallback) => node.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.F : fallback;
}
