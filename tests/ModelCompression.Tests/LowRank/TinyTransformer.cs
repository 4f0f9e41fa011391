using Google.Protobuf;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;

namespace ModelCompression.Tests.LowRank;

/// <summary>
/// A one-block, single-head transformer classifier built with our ONNX layer (opset 17), random but fixed weights:
/// LayerNorm → Q/K/V MatMul → softmax attention → output MatMul → residual → LayerNorm → MatMul/ReLU/MatMul
/// feed-forward → residual → mean over tokens → head MatMul to 10 logits. Its inputs come from a distribution with
/// strongly correlated features (tokens x = z·A + noise, z of low dimension), the setting where truncating a weight
/// in its own metric throws away what the data uses and activation-aware truncation does not.
/// </summary>
internal static class TinyTransformer
{
    public const int Tokens = 16;
    public const int Width = 64;
    public const int Hidden = 256;
    public const int Classes = 10;
    /// <summary>Dimension of the latent z behind each token.</summary>
    public const int Latent = 8;
    public const string InputName = "tokens";
    public const string HeadName = "head";

    /// <summary>The factorizable layers (the head is left out of the comparisons: 10 classes leave it nothing to cut).</summary>
    public static readonly string[] MatMulLayers = ["q_proj", "k_proj", "v_proj", "o_proj", "ffn_up", "ffn_down"];

    public static OnnxModel Build(int seed = 7)
    {
        var random = new Random(seed);
        var graph = new GraphProto { Name = "tiny_transformer" };
        graph.Input.Add(Value(InputName, Tokens, Width));
        graph.Output.Add(Value("logits", Classes));

        void Init(string name, long[] dims, float[] values) => graph.Initializer.Add(Tensors.FromFloats(name, dims, values));
        float[] Gaussian(int count, double scale) => Enumerable.Range(0, count).Select(_ => (float)(scale * Normal(random))).ToArray();
        void Weight(string name, int rows, int cols) => Init(name, [rows, cols], Gaussian(rows * cols, 1 / Math.Sqrt(rows)));
        void Node(string op, string name, string[] inputs, string output, params AttributeProto[] attributes)
        {
            var node = new NodeProto { OpType = op, Name = name };
            node.Input.AddRange(inputs);
            node.Output.Add(output);
            node.Attribute.AddRange(attributes);
            graph.Node.Add(node);
        }

        Init("ln1.scale", [Width], Enumerable.Repeat(1f, Width).ToArray());
        Init("ln1.bias", [Width], new float[Width]);
        Init("ln2.scale", [Width], Enumerable.Repeat(1f, Width).ToArray());
        Init("ln2.bias", [Width], new float[Width]);
        Weight("q.weight", Width, Width);
        Weight("k.weight", Width, Width);
        Weight("v.weight", Width, Width);
        Weight("o.weight", Width, Width);
        Weight("up.weight", Width, Hidden);
        Init("up.bias", [Hidden], Gaussian(Hidden, 0.1));
        Weight("down.weight", Hidden, Width);
        Weight("head.weight", Width, Classes);
        Init("attention.scale", [], [(float)(1 / Math.Sqrt(Width))]);

        Node("LayerNormalization", "ln1", [InputName, "ln1.scale", "ln1.bias"], "h1", Int("axis", -1));
        Node("MatMul", "q_proj", ["h1", "q.weight"], "q");
        Node("MatMul", "k_proj", ["h1", "k.weight"], "k");
        Node("MatMul", "v_proj", ["h1", "v.weight"], "v");
        Node("Transpose", "k_t", ["k"], "kt", Ints("perm", 0, 2, 1));
        Node("MatMul", "scores", ["q", "kt"], "s");
        Node("Mul", "scale", ["s", "attention.scale"], "s_scaled");
        Node("Softmax", "softmax", ["s_scaled"], "attention", Int("axis", -1));
        Node("MatMul", "mix", ["attention", "v"], "mixed");
        Node("MatMul", "o_proj", ["mixed", "o.weight"], "o");
        Node("Add", "residual1", [InputName, "o"], "r1");
        Node("LayerNormalization", "ln2", ["r1", "ln2.scale", "ln2.bias"], "h2", Int("axis", -1));
        Node("MatMul", "ffn_up", ["h2", "up.weight"], "f1");
        Node("Add", "ffn_bias", ["f1", "up.bias"], "f1b");
        Node("Relu", "ffn_relu", ["f1b"], "f1r");
        Node("MatMul", "ffn_down", ["f1r", "down.weight"], "f2");
        Node("Add", "residual2", ["r1", "f2"], "r2");
        Node("ReduceMean", "pool", ["r2"], "pooled", Ints("axes", 1), Int("keepdims", 0));
        Node("MatMul", HeadName, ["pooled", "head.weight"], "logits");

        var model = new ModelProto { IrVersion = 8, ProducerName = "ModelCompression.Tests", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        return OnnxModel.Parse(model.ToByteArray(), Path.GetTempPath(), "tiny_transformer");
    }

    /// <summary>
    /// Writes <paramref name="samples"/> token sequences as an ONNX test-data folder: each token is z·A + noise with
    /// z ~ N(0, I) of dimension <see cref="Latent"/> and one fixed mixing matrix A, so the 64 features are strongly
    /// correlated. The same <paramref name="mixingSeed"/> gives the same distribution; <paramref name="sampleSeed"/> picks the draws.
    /// </summary>
    public static string WriteData(string folder, int samples, int sampleSeed, int mixingSeed = 11, double noise = 0.05)
    {
        var mixingRandom = new Random(mixingSeed);
        var mixing = Enumerable.Range(0, Latent * Width).Select(_ => Normal(mixingRandom)).ToArray();
        var random = new Random(sampleSeed);
        var data = new float[samples * Tokens * Width];
        var z = new double[Latent];
        for (var t = 0; t < samples * Tokens; t++)
        {
            for (var l = 0; l < Latent; l++) z[l] = Normal(random);
            for (var f = 0; f < Width; f++)
            {
                var x = noise * Normal(random);
                for (var l = 0; l < Latent; l++) x += z[l] * mixing[l * Width + f];
                data[t * Width + f] = (float)x;
            }
        }
        var set = Path.Combine(folder, "test_data_set_0");
        Directory.CreateDirectory(set);
        File.WriteAllBytes(Path.Combine(set, "input_0.pb"), Tensors.FromFloats(InputName, [samples, Tokens, Width], data).ToByteArray());
        return folder;
    }

    private static double Normal(Random random) =>
        Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());

    private static ValueInfoProto Value(string name, params long[] dims)
    {
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "batch" });
        foreach (var d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } },
        };
    }

    private static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    private static AttributeProto Ints(string name, params long[] values)
    {
        var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        attribute.Ints.AddRange(values);
        return attribute;
    }
}
