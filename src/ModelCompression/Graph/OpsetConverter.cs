using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using AttributeType = ModelCompression.Onnx.Protobuf.AttributeProto.Types.AttributeType;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Graph;

/// <summary>
/// Raises a model's default-domain (ai.onnx) opset from 7–12 to 13, following the ONNX version converter
/// (<c>onnx/version_converter/convert.h</c> and its adapters): ops whose meaning did not change are relabelled, the
/// others are rewritten into their opset-13 form with the same outputs. All or nothing: <see cref="WhyNot"/> names the
/// first op it cannot convert, and then nothing is changed. Subgraphs (If/Loop/Scan bodies) share the model's opset
/// imports, so their nodes are converted too. Other domains (ai.onnx.ml, com.microsoft) are left as they are.
/// </summary>
public static class OpsetConverter
{
    public const long Target = 13;
    /// <summary>Opset 7 changed broadcasting (Add, Mul, …: the <c>broadcast</c>/<c>axis</c> attributes went away); older models are refused.</summary>
    public const long OldestSupported = 7;
    /// <summary>IR version 7 (ONNX 1.8) is the first that carries opset 13.</summary>
    private const long IrForTarget = 7;

    /// <summary>
    /// Ops whose meaning is the same in every version from opset 7 up to the one in force at opset 13 (the converter's
    /// CompatibleAdapter steps: later versions only add types, optional inputs/attributes with the old default, or
    /// allow negative axes). Relabelling is all they need.
    /// </summary>
    public static readonly IReadOnlySet<string> LabelOnly = new HashSet<string>(StringComparer.Ordinal)
    {
        "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
        "BitShift", "Cast", "Ceil", "Celu", "Compress", "Concat", "ConcatFromSequence", "Constant", "ConstantOfShape",
        "Conv", "ConvInteger", "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "DequantizeLinear", "Det", "Div",
        "DynamicQuantizeLinear", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "GRU",
        "Gather", "GatherElements", "GatherND", "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater",
        "GreaterOrEqual", "HardSigmoid", "Identity", "If", "InstanceNormalization", "IsInf", "IsNaN", "LRN", "LSTM",
        "LeakyRelu", "Less", "LessOrEqual", "Log", "Loop", "LpNormalization", "LpPool", "MatMul", "MatMulInteger", "Max",
        "MaxPool", "MaxRoiPool", "MaxUnpool", "Mean", "MeanVarianceNormalization", "Min", "Mod", "Mul", "Multinomial",
        "Neg", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "PRelu", "Pow", "QLinearConv", "QLinearMatMul",
        "QuantizeLinear", "RNN", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range",
        "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
        "ReduceProd", "ReduceSumSquare", "Relu", "Reshape", "ReverseSequence", "RoiAlign", "Round", "ScatterElements",
        "ScatterND", "Selu", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
        "SequenceLength", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Softplus", "Softsign",
        "SpaceToDepth", "SplitToSequence", "Sqrt", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "Transpose",
        "Unique", "Where", "Xor",
    };

    /// <summary>Ops rewritten into their opset-13 form (the converter's adapters, named by the version that changed them).</summary>
    public static readonly IReadOnlySet<string> Rewritten = new HashSet<string>(StringComparer.Ordinal)
    {
        "Softmax", "LogSoftmax", "Hardmax",   // 13: the op runs over one axis instead of flattening to 2-D at it
        "Squeeze", "Unsqueeze", "ReduceSum",  // 13: axes attribute → input
        "Split",                              // 13: split attribute → input
        "Clip",                               // 11: min/max attributes → inputs
        "Pad",                                // 11: pads/value attributes → inputs
        "Slice",                              // 10: starts/ends/axes attributes → inputs
        "TopK",                               // 10: k attribute → input
        "Upsample",                           // 10: deprecated → Resize
        "Resize",                             // 11: roi input, coordinate_transformation_mode
        "Dropout",                            // 12: ratio attribute → input
        "BatchNormalization",                 // 9: spatial attribute removed
        "Scatter",                            // 11: deprecated → ScatterElements
        "Scan",                               // 9: batch axis removed (only opset 9+ Scan is accepted)
    };

    private static bool IsDefaultDomain(NodeProto node) => (node.Domain ?? "") is "" or "ai.onnx";

    /// <summary>Why the model cannot be raised to opset 13, or null when it can (or already is).</summary>
    public static string? WhyNot(ModelProto model)
    {
        var from = OpsetOf(model);
        if (from >= Target) return null;
        if (from < OldestSupported) return $"opset {from} is older than {OldestSupported} (broadcasting changed at 7)";
        return WhyNot(model.Graph, from);
    }

    private static string? WhyNot(GraphProto graph, long from)
    {
        var view = new OnnxGraph(graph);
        foreach (var node in graph.Node)
        {
            foreach (var sub in Subgraphs(node))
                if (WhyNot(sub, from) is { } inner) return inner;
            if (!IsDefaultDomain(node)) continue;
            if (WhyNotNode(view, node, from) is { } reason) return $"op {node.OpType} ('{OnnxGraph.Describe(node)}'): {reason}";
        }
        return null;
    }

    private static string? WhyNotNode(OnnxGraph graph, NodeProto node, long from)
    {
        var op = node.OpType;
        if (!LabelOnly.Contains(op) && !Rewritten.Contains(op)) return "no opset-13 conversion is known for it";
        switch (op)
        {
            case "BatchNormalization" when Int(node, "spatial") is 0:
                return "spatial=0 (per-activation statistics) has no opset-13 form";
            case "Dropout" when from < 10 && node.Output.Count > 1 && node.Output[1].Length > 0:
                return "its mask output changed type (float → bool) at opset 10";
            case "Scan" when from < 9:
                return "Scan before opset 9 has a batch axis that opset 9 removed";
            case "Resize" when Str(node, "coordinate_transformation_mode") == "tf_half_pixel_for_nn":
                return "coordinate_transformation_mode=tf_half_pixel_for_nn was removed at opset 13";
            case "Clip" or "Pad" when from < 11 && ElementType(graph, node.Input[0]) is { } type and not DataType.Float:
                return $"its attributes become inputs of the input's type ({type}), only float is converted";
            case "Upsample" or "Resize" when from < 11 && Str(node, "mode") is { } mode && mode is not ("nearest" or "linear" or "bilinear"):
                return $"mode '{mode}'";
        }
        return null;
    }

    /// <summary>Raises the model to opset 13 in place. Call only when <see cref="WhyNot(ModelProto)"/> is null.</summary>
    public static void Upgrade(ModelProto model)
    {
        var from = OpsetOf(model);
        if (from >= Target) return;
        Upgrade(model.Graph, from);
        foreach (var opset in model.OpsetImport)
            if ((opset.Domain ?? "") is "" or "ai.onnx") opset.Version = Target;
        if (model.IrVersion < IrForTarget) model.IrVersion = IrForTarget;
    }

    private static long OpsetOf(ModelProto model) =>
        model.OpsetImport.FirstOrDefault(o => (o.Domain ?? "") is "" or "ai.onnx")?.Version ?? 1;

    private static void Upgrade(GraphProto proto, long from)
    {
        var graph = new OnnxGraph(proto);
        foreach (var node in proto.Node.ToList())
        {
            foreach (var sub in Subgraphs(node)) Upgrade(sub, from);
            if (IsDefaultDomain(node)) Convert(graph, node, from);
        }
        graph.Invalidate();
    }

    private static IEnumerable<GraphProto> Subgraphs(NodeProto node)
    {
        foreach (var a in node.Attribute)
        {
            if (a.G is not null) yield return a.G;
            foreach (var g in a.Graphs) yield return g;
        }
    }

    private static void Convert(OnnxGraph graph, NodeProto node, long from)
    {
        switch (node.OpType)
        {
            case "Softmax" or "LogSoftmax" or "Hardmax":
                ConvertSoftmax(graph, node);
                break;
            case "Squeeze" or "Unsqueeze" or "ReduceSum":
                if (Ints(node, "axes") is { } axes)
                {
                    SetInput(node, 1, Int64s(graph, node, "axes", axes));
                    Remove(node, "axes");
                }
                break;
            case "Split":
                if (Ints(node, "split") is { } split)
                {
                    SetInput(node, 1, Int64s(graph, node, "split", split));
                    Remove(node, "split");
                }
                break;
            case "Clip" when from < 11:
                // A missing bound is an empty optional input (no clipping on that side), as in opset 11.
                if (Float(node, "min") is { } min) SetInput(node, 1, Scalar(graph, node, "min", min));
                if (Float(node, "max") is { } max) SetInput(node, 2, Scalar(graph, node, "max", max));
                Remove(node, "min");
                Remove(node, "max");
                break;
            case "Pad" when from < 11:
                SetInput(node, 1, Int64s(graph, node, "pads", Ints(node, "pads") ?? []));
                if ((Str(node, "mode") ?? "constant") == "constant") SetInput(node, 2, Scalar(graph, node, "value", Float(node, "value") ?? 0f));
                Remove(node, "pads");
                Remove(node, "value");
                break;
            case "Slice" when from < 10:
                SetInput(node, 1, Int64s(graph, node, "starts", Ints(node, "starts") ?? []));
                SetInput(node, 2, Int64s(graph, node, "ends", Ints(node, "ends") ?? []));
                if (Ints(node, "axes") is { } sliceAxes) SetInput(node, 3, Int64s(graph, node, "axes", sliceAxes));
                Remove(node, "starts");
                Remove(node, "ends");
                Remove(node, "axes");
                break;
            case "TopK" when from < 10:
                SetInput(node, 1, Int64s(graph, node, "k", [Int(node, "k") ?? 0]));
                Remove(node, "k");
                break;
            case "Upsample":
                ConvertUpsample(graph, node, from);
                break;
            case "Resize" when from < 11:
                ConvertResize10(node);
                break;
            case "Dropout" when from < 12:
                // Inference ignores the ratio; it moves to the optional input so training tools keep it.
                if (Float(node, "ratio") is { } ratio) SetInput(node, 1, Scalar(graph, node, "ratio", ratio, DataType.Float));
                Remove(node, "ratio");
                break;
            case "BatchNormalization":
                Remove(node, "spatial");
                break;
            case "Scatter":
                node.OpType = "ScatterElements";
                break;
        }
    }

    /// <summary>
    /// Before opset 13 the op flattens its input to 2-D at <c>axis</c> (default 1) and normalizes each row; from 13
    /// it normalizes along one axis (default -1). When <c>axis</c> is the last one the two agree; otherwise the
    /// converter's form keeps the old meaning for any rank: Flatten(axis) → op(axis=-1) → Reshape to the input's shape.
    /// </summary>
    private static void ConvertSoftmax(OnnxGraph graph, NodeProto node)
    {
        var axis = Int(node, "axis") ?? 1;
        var input = node.Input[0];
        var rank = (graph.Shape(input) ?? graph.Shape(node.Output[0]))?.Length;
        Remove(node, "axis");
        if (axis == -1 || (rank is { } r && (axis < 0 ? axis + r : axis) == r - 1))
        {
            node.Attribute.Add(IntAttribute("axis", -1));
            return;
        }
        var output = node.Output[0];
        var prefix = string.IsNullOrEmpty(node.Name) ? output : node.Name;
        var shape = graph.FreshName(prefix + "_opset13_shape");
        var flat = graph.FreshName(prefix + "_opset13_flat");
        var normalized = graph.FreshName(prefix + "_opset13_2d");
        var shapeNode = new NodeProto { OpType = "Shape", Name = shape, Input = { input }, Output = { shape } };
        var flatten = new NodeProto { OpType = "Flatten", Name = flat, Input = { input }, Output = { flat }, Attribute = { IntAttribute("axis", axis) } };
        var reshape = new NodeProto { OpType = "Reshape", Name = graph.FreshName(prefix + "_opset13_reshape"), Input = { normalized, shape }, Output = { output } };
        node.Input[0] = flat;
        node.Output[0] = normalized;
        node.Attribute.Add(IntAttribute("axis", -1));
        graph.InsertBefore(node, shapeNode);
        graph.InsertBefore(node, flatten);
        graph.InsertAfter(node, reshape);
    }

    /// <summary>
    /// Upsample (opset 7–9; deprecated at 10) becomes Resize with its coordinates spelled out: Upsample maps output
    /// pixel i to input i / scale ("asymmetric") and nearest takes the floor, which Resize-11+ must be told (its
    /// defaults are half_pixel and round_prefer_floor). Before opset 9 the scales are an attribute.
    /// </summary>
    private static void ConvertUpsample(OnnxGraph graph, NodeProto node, long from)
    {
        var scales = from < 9 ? Floats(graph, node, "scales", node.Attribute.FirstOrDefault(a => a.Name == "scales")?.Floats.ToArray() ?? []) : node.Input[1];
        node.OpType = "Resize";
        var x = node.Input[0];
        node.Input.Clear();
        node.Input.Add(x);
        node.Input.Add("");
        node.Input.Add(scales);
        Remove(node, "scales");
        SetResizeModes(node);
    }

    private static void SetResizeModes(NodeProto node)
    {
        var mode = Str(node, "mode") ?? "nearest";
        Remove(node, "mode");
        var linear = mode is "linear" or "bilinear";
        node.Attribute.Add(StringAttribute("mode", linear ? "linear" : "nearest"));
        node.Attribute.Add(StringAttribute("coordinate_transformation_mode", "asymmetric"));
        if (!linear) node.Attribute.Add(StringAttribute("nearest_mode", "floor"));
    }

    /// <summary>Resize-10 (X, scales) → Resize-13 (X, roi = none, scales) with Resize-10's coordinates.</summary>
    private static void ConvertResize10(NodeProto node)
    {
        var x = node.Input[0];
        var scales = node.Input[1];
        node.Input.Clear();
        node.Input.Add(x);
        node.Input.Add("");
        node.Input.Add(scales);
        SetResizeModes(node);
    }

    // ---- attribute and constant helpers ----

    private static AttributeProto? Attribute(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name);
    private static long? Int(NodeProto node, string name) => Attribute(node, name) is { } a ? a.I : null;
    private static float? Float(NodeProto node, string name) => Attribute(node, name) is { } a ? a.F : null;
    private static long[]? Ints(NodeProto node, string name) => Attribute(node, name) is { } a ? a.Ints.ToArray() : null;
    private static string? Str(NodeProto node, string name) => Attribute(node, name) is { } a ? a.S.ToStringUtf8() : null;

    private static void Remove(NodeProto node, string name)
    {
        for (var i = node.Attribute.Count - 1; i >= 0; i--)
            if (node.Attribute[i].Name == name) node.Attribute.RemoveAt(i);
    }

    private static AttributeProto IntAttribute(string name, long value) => new() { Name = name, Type = AttributeType.Int, I = value };
    private static AttributeProto StringAttribute(string name, string value) => new() { Name = name, Type = AttributeType.String, S = Google.Protobuf.ByteString.CopyFromUtf8(value) };

    /// <summary>Sets optional input <paramref name="index"/>, padding the ones before it with empty names (absent).</summary>
    private static void SetInput(NodeProto node, int index, string value)
    {
        while (node.Input.Count <= index) node.Input.Add("");
        node.Input[index] = value;
    }

    private static string NewName(OnnxGraph graph, NodeProto node, string what) =>
        graph.FreshName($"{(string.IsNullOrEmpty(node.Name) ? node.Output[0] : node.Name)}_opset13_{what}");

    private static string Int64s(OnnxGraph graph, NodeProto node, string what, long[] values)
    {
        var name = NewName(graph, node, what);
        graph.SetInitializer(Tensors.FromInt64s(name, [values.Length], values));
        return name;
    }

    private static string Floats(OnnxGraph graph, NodeProto node, string what, float[] values)
    {
        var name = NewName(graph, node, what);
        graph.SetInitializer(Tensors.FromFloats(name, [values.Length], values));
        return name;
    }

    private static string Scalar(OnnxGraph graph, NodeProto node, string what, float value, DataType type = DataType.Float)
    {
        var name = NewName(graph, node, what);
        graph.SetInitializer(Tensors.Create(name, [], type, [value]));
        return name;
    }

    /// <summary>A value's element type where the graph states it (inputs, outputs, value_info, initializers); null when unknown.</summary>
    private static DataType? ElementType(OnnxGraph graph, string value)
    {
        if (graph.Initializer(value) is { } init) return (DataType)init.DataType;
        var info = graph.Proto.Input.Concat(graph.Proto.Output).Concat(graph.Proto.ValueInfo).FirstOrDefault(v => v.Name == value);
        return info?.Type?.TensorType is { } t && t.ElemType != 0 ? (DataType)t.ElemType : null;
    }
}
