using System.Text;
using Google.Protobuf;
using ModelCompression.Onnx.Protobuf;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;
using DataLocation = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataLocation;

namespace ModelCompression.Reliability;

/// <summary>
/// One generated case: the files it wrote under <see cref="InputDirectory"/>, the CLI arguments that compress them
/// into <see cref="OutputPath"/>, and, for mutations with only one right answer, the code the run must fail with.
/// </summary>
public sealed record MutationCase(int Index, string Category, string Kind, string Detail, string[] Args,
    string InputDirectory, string OutputDirectory, string OutputPath, string? ExpectedCode)
{
    public string Name => $"#{Index} {Category}/{Kind}: {Detail}";
}

/// <summary>
/// Builds seeded mutation cases against one fixture model (an MLP whose input is <c>image</c> [n,1,28,28]):
/// byte-level damage, structural damage through the ONNX protobuf layer, bad settings and policy files, bad data.
/// A case depends only on (seed, index), so any failure is reproduced by its pair.
/// </summary>
public sealed class Mutator
{
    private readonly byte[] _model;
    private readonly (string Category, string Kind, Action<Context> Apply)[] _mutations;

    public Mutator(string fixtureModelPath, int? shrinkHidden = null)
    {
        _model = File.ReadAllBytes(fixtureModelPath);
        if (shrinkHidden is { } hidden) _model = Fixture.ShrinkMlp(_model, hidden);
        _mutations = Mutations().ToArray();
    }

    public IReadOnlyList<(string Category, string Kind)> Kinds => _mutations.Select(m => (m.Category, m.Kind)).ToList();

    /// <summary>Writes case <paramref name="index"/> of <paramref name="seed"/> under <paramref name="workDirectory"/> (which must be empty).</summary>
    /// <param name="roundRobin">Take the kinds in turn (case i is kind i mod the number of kinds) instead of at random, so a short run covers them all.</param>
    public MutationCase Create(int seed, int index, string workDirectory, Func<string, string, bool>? include = null, bool roundRobin = false)
    {
        var random = new Random(unchecked(seed * 1_000_003 + index * 7919));
        var candidates = include is null ? _mutations : _mutations.Where(m => include(m.Category, m.Kind)).ToArray();
        var mutation = candidates[roundRobin ? index % candidates.Length : random.Next(candidates.Length)];
        var context = new Context(random, ModelProto.Parser.ParseFrom(_model), _model, workDirectory);
        Directory.CreateDirectory(context.In);
        Directory.CreateDirectory(context.Out);
        context.PickBasePolicy();
        mutation.Apply(context);
        context.WriteFiles();
        var args = new List<string> { "compress", context.ModelPath, "-o", context.OutputPath, "--report-dir", Path.Combine(context.Out, "reports"), "--threads", "1" };
        args.AddRange(context.Policy);
        return new MutationCase(index, mutation.Category, mutation.Kind, context.Detail, args.ToArray(), context.In, context.Out, context.OutputPath, context.Expected);
    }

    /// <summary>What a mutation edits: the model (as a message, or as bytes once a byte mutation took over), the policy arguments and the data.</summary>
    public sealed class Context(Random random, ModelProto proto, byte[] original, string work)
    {
        public Random Random { get; } = random;
        public ModelProto Proto { get; } = proto;
        public byte[]? ModelBytes;
        public string Work { get; } = work;
        public string In => Path.Combine(Work, "in");
        public string Out => Path.Combine(Work, "out");
        public string ModelPath => Path.Combine(In, "model.onnx");
        public string OutputPath => Path.Combine(Out, "model.compressed.onnx");
        public List<string> Policy { get; } = [];
        public string Detail = "";
        public string? Expected;
        public byte[] Original { get; } = original;
        public GraphProto Graph => Proto.Graph;

        /// <summary>A cheap, valid technique so that a case which survives loading exercises a real pass and the gate.</summary>
        public void PickBasePolicy()
        {
            // Weighted to the cheap passes: a case that survives loading costs a whole compress and gate.
            var pick = Random.Next(20);
            Policy.AddRange(pick switch
            {
                < 8 => ["--quantize", "int8-dynamic"],
                < 11 => ["--quantize", "float16"],
                < 14 => ["--quantize", "int8", "--calibration-data", Data("calib.npz", 16)],
                < 16 => ["--sparsity", "0.5"],
                < 18 => ["--rank", "0.25"],
                _ => ["--codebook", "4", "--codebook-iterations", "1"],
            });
            if (Random.NextDouble() < 0.3) Policy.AddRange(["--validation-data", Data("val.npz", 16), "--latency-rounds", "1"]);
        }

        public string Data(string name, int samples)
        {
            var path = Path.Combine(In, name);
            if (!File.Exists(path)) Files.WriteValidData(path, new Random(samples), samples);
            return path;
        }

        public T Pick<T>(IReadOnlyList<T> items) => items[Random.Next(items.Count)];
        public TensorProto PickInitializer() => Graph.Initializer[Random.Next(Graph.Initializer.Count)];
        public NodeProto PickNode() => Graph.Node[Random.Next(Graph.Node.Count)];

        /// <summary>Removes an option (and its value) the base policy set, so a mutation can set it its own way.</summary>
        public void SetOption(string option, string? value)
        {
            var at = Policy.IndexOf(option);
            if (at >= 0) Policy.RemoveRange(at, 2);
            if (value is not null) Policy.AddRange([option, value]);
        }

        public void WriteFiles()
        {
            File.WriteAllBytes(ModelPath, ModelBytes ?? Proto.ToByteArray());
        }

        /// <summary>Moves an initializer's bytes to a side file and points the tensor at <paramref name="location"/>.</summary>
        public (TensorProto Tensor, byte[] Bytes) Externalize(TensorProto tensor, string location, long? offset = null, long? length = null)
        {
            var bytes = tensor.RawData.ToByteArray();
            tensor.ClearRawData();
            tensor.DataLocation = DataLocation.External;
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
            if (offset is not null) tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.Value.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            if (length is not null) tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length.Value.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            return (tensor, bytes);
        }
    }

    private static IEnumerable<(string, string, Action<Context>)> Mutations()
    {
        // ---- bytes: damage to the serialized model -------------------------------------------------------------
        yield return ("bytes", "flip", c =>
        {
            var bytes = (byte[])c.Original.Clone();
            var flips = 1 + c.Random.Next(16);
            // Most of the file is weights; half the flips go to the first 4 KiB where the graph structure lives.
            for (var i = 0; i < flips; i++)
            {
                var at = c.Random.NextDouble() < 0.5 ? c.Random.Next(Math.Min(4096, bytes.Length)) : c.Random.Next(bytes.Length);
                bytes[at] ^= (byte)(1 << c.Random.Next(8));
            }
            c.ModelBytes = bytes;
            c.Detail = $"{flips} bit flips";
        });
        yield return ("bytes", "truncate", c =>
        {
            var length = c.Random.NextDouble() < 0.5 ? c.Random.Next(4096) : c.Random.Next(c.Original.Length);
            c.ModelBytes = c.Original[..length];
            c.Detail = $"first {length} bytes";
        });
        yield return ("bytes", "garbage", c =>
        {
            var bytes = (byte[])c.Original.Clone();
            var length = 1 + c.Random.Next(256);
            var at = c.Random.Next(Math.Min(8192, bytes.Length - length));
            c.Random.NextBytes(bytes.AsSpan(at, length));
            c.ModelBytes = bytes;
            c.Detail = $"{length} random bytes at {at}";
        });
        yield return ("bytes", "random-file", c =>
        {
            var bytes = new byte[c.Random.Next(3) switch { 0 => 0, 1 => c.Random.Next(64), _ => c.Random.Next(1 << 16) }];
            c.Random.NextBytes(bytes);
            c.ModelBytes = bytes;
            c.Detail = $"{bytes.Length} random bytes";
        });
        yield return ("bytes", "append", c =>
        {
            var tail = new byte[1 + c.Random.Next(1024)];
            c.Random.NextBytes(tail);
            c.ModelBytes = [.. c.Original, .. tail];
            c.Detail = $"{tail.Length} bytes appended";
        });

        // ---- structure: damage through the ONNX protobuf layer -------------------------------------------------
        yield return ("structure", "dims-disagree", c =>
        {
            var t = c.PickInitializer();
            var axis = c.Random.Next(t.Dims.Count);
            t.Dims[axis] += c.Pick(new long[] { -1, 1, 7, -t.Dims[axis] });
            c.Detail = $"{t.Name} dims [{string.Join(",", t.Dims)}]";
        });
        yield return ("structure", "missing-initializer", c =>
        {
            var t = c.PickInitializer();
            c.Graph.Initializer.Remove(t);
            c.Detail = t.Name;
        });
        yield return ("structure", "cycle", c =>
        {
            var nodes = c.Graph.Node;
            if (c.Random.Next(2) == 0)
            {
                nodes[0].Input[0] = nodes[^1].Output[0];
                c.Detail = "first node reads the last node's output";
            }
            else
            {
                var reversed = nodes.Reverse().ToList();
                nodes.Clear();
                nodes.AddRange(reversed);
                c.Detail = "nodes in reverse order";
            }
        });
        yield return ("structure", "unknown-op", c =>
        {
            var n = c.PickNode();
            if (c.Random.Next(2) == 0) n.OpType = c.Pick(new[] { "NoSuchOp", "", "gemm", "Gemm\0", new string('X', 10000) });
            else n.Domain = c.Pick(new[] { "com.example.nosuch", "ai.onnx.ml" });
            c.Detail = $"{n.Name}: op '{(n.OpType.Length > 20 ? n.OpType[..20] + "…" : n.OpType)}' domain '{n.Domain}'";
        });
        yield return ("structure", "huge-dims", c =>
        {
            var t = c.PickInitializer();
            var axis = c.Random.Next(t.Dims.Count);
            t.Dims[axis] = c.Pick(new[] { 1L << 31, 1L << 40, long.MaxValue, int.MaxValue, 1L << 62 });
            if (c.Random.Next(2) == 0) t.Dims.Add(1L << 33);
            // Typed fields instead of raw bytes: nothing but the element count may size an allocation.
            if (c.Random.Next(3) == 0) { t.ClearRawData(); t.FloatData.AddRange([1f, 2f, 3f, 4f]); }
            c.Detail = $"{t.Name} dims [{string.Join(",", t.Dims)}]";
        });
        yield return ("structure", "negative-dims", c =>
        {
            var t = c.PickInitializer();
            t.Dims[c.Random.Next(t.Dims.Count)] = c.Pick(new[] { -1L, -2, long.MinValue, -(1L << 40) });
            if (c.Random.Next(3) == 0) t.Dims[0] = -t.Dims[0];
            c.Detail = $"{t.Name} dims [{string.Join(",", t.Dims)}]";
        });
        yield return ("structure", "wrong-dtype", c =>
        {
            var t = c.PickInitializer();
            t.DataType = c.Pick(new[] { 0, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 17, 21, 22, 23, 99, -3 });
            c.Detail = $"{t.Name} data_type {t.DataType}";
        });
        yield return ("structure", "typed-fields", c =>
        {
            // Values in float_data instead of raw bytes, with a count that disagrees with the dims, or both fields set.
            var t = c.PickInitializer();
            var count = c.Random.Next(4) switch { 0 => 0, 1 => 1, 2 => 3, _ => (int)(t.RawData.Length / 4) + 1 };
            if (c.Random.Next(2) == 0) t.ClearRawData();
            t.FloatData.AddRange(Enumerable.Repeat(0.5f, count));
            c.Detail = $"{t.Name}: {count} float_data values, raw {(t.HasRawData ? "kept" : "cleared")}";
        });
        yield return ("structure", "raw-length", c =>
        {
            var t = c.PickInitializer();
            var bytes = t.RawData.ToByteArray();
            var length = c.Pick(new[] { 0, bytes.Length - 1, bytes.Length + 1, bytes.Length / 2, bytes.Length + 4 });
            Array.Resize(ref bytes, length);
            t.RawData = ByteString.CopyFrom(bytes);
            c.Detail = $"{t.Name}: {length} raw bytes";
        });
        yield return ("structure", "external-escape", c =>
        {
            // The side file holds the right bytes: only confinement to the model folder can reject it.
            var t = c.PickInitializer();
            var outside = Path.Combine(c.Work, "outside");
            Directory.CreateDirectory(outside);
            var form = c.Pick(new[] { "dotdot", "absolute", "symlink-file", "symlink-dir", "backslash-dotdot" });
            var location = form switch
            {
                "dotdot" => "../outside/w.bin",
                "absolute" => Path.Combine(outside, "w.bin"),
                "symlink-file" => "link.bin",
                "symlink-dir" => "sub/w.bin",
                _ => "..\\outside\\w.bin",
            };
            var (_, bytes) = c.Externalize(t, location);
            File.WriteAllBytes(Path.Combine(outside, "w.bin"), bytes);
            if (form == "symlink-file") File.CreateSymbolicLink(Path.Combine(c.In, "link.bin"), Path.Combine(outside, "w.bin"));
            if (form == "symlink-dir") Directory.CreateSymbolicLink(Path.Combine(c.In, "sub"), outside);
            c.Detail = $"{t.Name} at '{location}' ({form})";
            c.Expected = form == "backslash-dotdot" && !OperatingSystem.IsWindows() ? null : "CM0111";
        });
        yield return ("structure", "external-broken", c =>
        {
            var t = c.PickInitializer();
            var form = c.Pick(new[] { "missing", "short", "offset-past-end", "bad-offset", "bad-length", "huge-length", "directory", "unaligned-ok", "empty" }); 

            var length = t.RawData.Length;
            var (_, bytes) = form switch
            {
                "offset-past-end" => c.Externalize(t, "w.bin", offset: length * 2L),
                "huge-length" => c.Externalize(t, "w.bin", length: long.MaxValue),
                "unaligned-ok" => c.Externalize(t, "w.bin", offset: 3, length: length),
                "directory" => c.Externalize(t, "dir"),
                _ => c.Externalize(t, "w.bin"),
            };
            var file = Path.Combine(c.In, "w.bin");
            switch (form)
            {
                case "missing": break;
                case "empty": File.WriteAllBytes(file, []); break;
                case "short": File.WriteAllBytes(file, bytes[..c.Random.Next(bytes.Length)]); break;
                case "directory": Directory.CreateDirectory(Path.Combine(c.In, "dir")); break;
                case "unaligned-ok": File.WriteAllBytes(file, [1, 2, 3, .. bytes]); break;
                default: File.WriteAllBytes(file, bytes); break;
            }
            if (form == "bad-offset") t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = c.Pick(new[] { "-1", "abc", "1e3", "99999999999999999999", "" }) });
            if (form == "bad-length") t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = c.Pick(new[] { "-5", "x", "0x10", "18446744073709551615" }) });
            c.Detail = $"{t.Name}: {form}";
        });
        yield return ("structure", "non-finite", c =>
        {
            var t = c.PickInitializer();
            var bytes = t.RawData.ToByteArray();
            var value = c.Pick(new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity });
            var count = 1 + c.Random.Next(3);
            for (var i = 0; i < count; i++) BitConverter.TryWriteBytes(bytes.AsSpan(c.Random.Next(bytes.Length / 4) * 4), value);
            t.RawData = ByteString.CopyFrom(bytes);
            c.Detail = $"{t.Name}: {count} × {value}";
            c.Expected = "CM0112";
        });
        yield return ("structure", "empty-graph", c =>
        {
            var form = c.Random.Next(5);
            switch (form)
            {
                case 0: c.Graph.Node.Clear(); break;
                case 1: c.Graph.Node.Clear(); c.Graph.Initializer.Clear(); break;
                case 2: c.Graph.Output.Clear(); break;
                case 3: c.Graph.Input.Clear(); break;
                default: c.Proto.Graph = new GraphProto(); break;
            }
            c.Detail = new[] { "no nodes", "no nodes or initializers", "no outputs", "no inputs", "empty graph message" }[form];
        });
        yield return ("structure", "duplicate-names", c =>
        {
            var form = c.Random.Next(4);
            switch (form)
            {
                case 3: // an output listed twice
                    c.Graph.Output.Add(c.Graph.Output[0].Clone());
                    break;
                case 0: // two nodes writing one value
                    c.Graph.Node[1].Output[0] = c.Graph.Node[0].Output[0];
                    break;
                case 1: // an input listed twice
                    c.Graph.Input.Add(c.Graph.Input[0].Clone());
                    break;
                default: // a node name reused (names are only labels; must not confuse layer lookups)
                    foreach (var n in c.Graph.Node) n.Name = "same";
                    break;
            }
            c.Detail = new[] { "two producers of one value", "graph input listed twice", "every node named 'same'", "graph output listed twice" }[form];
        });
        yield return ("structure", "opset-ir", c =>
        {
            var form = c.Random.Next(5);
            switch (form)
            {
                case 0: c.Proto.OpsetImport.Clear(); break;
                case 1: c.Proto.OpsetImport[0].Version = 0; break;
                case 2: c.Proto.OpsetImport[0].Version = 999; break;
                case 3: c.Proto.IrVersion = 0; break;
                default: c.Proto.IrVersion = long.MaxValue; break;
            }
            c.Detail = new[] { "no opset import", "opset 0", "opset 999", "ir_version 0", "ir_version max" }[form];
        });
        yield return ("structure", "io-types", c =>
        {
            var form = c.Random.Next(4);
            var input = c.Graph.Input[0];
            switch (form)
            {
                case 0: input.Type = null; break;
                case 1: input.Type.TensorType.ElemType = 8; break;
                case 2: input.Type.TensorType.Shape.Dim[1].DimValue = -3; break;
                default: c.Graph.Output[0].Name = "not-produced"; break;
            }
            c.Detail = new[] { "input without type", "string input", "input dim -3", "output not produced" }[form];
        });
        yield return ("structure", "attributes", c =>
        {
            var n = c.PickNode();
            var form = c.Random.Next(3);
            switch (form)
            {
                case 0: n.Attribute.Add(new AttributeProto { Name = "alpha", Type = AttributeProto.Types.AttributeType.Float, F = float.NaN }); break;
                case 1: n.Attribute.Clear(); n.Attribute.Add(new AttributeProto { Name = "transB", Type = AttributeProto.Types.AttributeType.Float, F = 1 }); break;
                default: n.Attribute.Add(new AttributeProto { Name = "nosuch", Type = AttributeProto.Types.AttributeType.Graph, G = new GraphProto() }); break;
            }
            c.Detail = $"{n.Name}: {new[] { "alpha NaN", "transB as a float", "unknown graph attribute" }[form]}";
        });
        yield return ("structure", "subgraphs", ApplySubgraph);

        // ---- settings: bad values, conflicts, policy files -----------------------------------------------------
        yield return ("policy", "bad-value", c =>
        {
            var option = c.Pick(new[] { "--sparsity", "--rank", "--rank-energy", "--codebook", "--batch-size", "--min-cosine", "--calibration-samples", "--threads", "--seed", "--int4-block-size", "--max-latency-ratio", "--quantize", "--sparsity-pattern", "--prune-method", "--parameter-budget", "--structured-sparsity", "--calibration-percentile" });
            var value = c.Pick(new[] { "1.5", "-1", "NaN", "Infinity", "-Infinity", "1e400", "abc", "", "0x10", " 0.5", "0,5", "3:2", "0:4", "2:0", "a:b", "9999999999999999999999", "int3", "1/2", "\u00bd", "0.5 0.5" });
            c.SetOption(option, value);
            c.Detail = $"{option} '{value}'";
        });
        yield return ("policy", "conflict", c =>
        {
            var form = c.Random.Next(5);
            c.Policy.Clear();
            c.Policy.AddRange(form switch
            {
                0 => ["--rank", "0.5", "--rank-energy", "0.9"],
                1 => ["--quantize", "int8-dynamic", "--min-accuracy", "0.9"],
                2 => ["--sparsity", "0.5", "--prune-method", "sparsegpt"],
                3 => ["--quantize", "int8"],
                _ => ["--sparsity", "0.5", "--sparsity-pattern", "2:4", "--structured-sparsity", "0.5", "--structured-criterion", "apoz"],
            });
            c.Detail = string.Join(' ', c.Policy);
        });
        yield return ("policy", "policy-file", c =>
        {
            var path = Path.Combine(c.In, "policy.json");
            var valid = """{ "layers": [ { "match": "/hidden.0/*", "Sparsity": 0.9 }, { "match": "/out/*", "Excluded": true } ] }""";
            var forms = new (string Name, Func<byte[]> Bytes)[]
            {
                ("truncated", () => Encoding.UTF8.GetBytes(valid[..c.Random.Next(valid.Length)])),
                ("unknown key", () => Encoding.UTF8.GetBytes("""{ "layers": [], "extra": 1 }""")),
                ("unknown setting", () => Encoding.UTF8.GetBytes("""{ "layers": [ { "match": "*", "Sparsty": 0.5 } ] }""")),
                ("global setting per layer", () => Encoding.UTF8.GetBytes("""{ "layers": [ { "match": "*", "CalibrationData": "x.npz" } ] }""")),
                ("out of range", () => Encoding.UTF8.GetBytes("""{ "layers": [ { "match": "*", "Sparsity": 2 } ] }""")),
                ("NaN literal", () => Encoding.UTF8.GetBytes("""{ "layers": [ { "match": "*", "Sparsity": NaN } ] }""")),
                ("NaN string", () => Encoding.UTF8.GetBytes("""{ "layers": [ { "match": "*", "Sparsity": "NaN" } ] }""")),
                ("wrong types", () => Encoding.UTF8.GetBytes("""{ "layers": { "match": 3 } }""")),
                ("no match", () => Encoding.UTF8.GetBytes("""{ "layers": [ { "Sparsity": 0.5 } ] }""")),
                ("null", () => Encoding.UTF8.GetBytes("null")),
                ("empty", () => []),
                ("deep nesting", () => Encoding.UTF8.GetBytes("""{ "layers": """ + new string('[', 5000) + new string(']', 5000) + "}")),
                ("bad glob", () => Encoding.UTF8.GetBytes($$"""{ "layers": [ { "match": "{{c.Pick(new[] { "[", "***", "\\\\", "[z-a]", "{a,b", "?[!", new string('*', 5000) + "x" })}}", "Sparsity": 0.5 } ] }""")),
                ("huge number", () => Encoding.UTF8.GetBytes("""{ "layers": [ { "match": "*", "Rank": 1e999 } ] }""")),
                ("conflicting entries", () => Encoding.UTF8.GetBytes("""{ "layers": [ { "match": "*", "Rank": 0.5, "RankEnergy": 0.9 } ] }""")),
                ("invalid UTF-8", () => [.. Encoding.UTF8.GetBytes("""{ "layers": [ { "match": " """), 0xFF, 0xFE, 0xC3, .. Encoding.UTF8.GetBytes(""" ", "Sparsity": 0.5 } ] }""")]),
                ("random bytes", () => { var b = new byte[c.Random.Next(1, 256)]; c.Random.NextBytes(b); return b; }),
            };
            var form = c.Pick(forms);
            File.WriteAllBytes(path, form.Bytes());
            c.SetOption("--policy-file", path);
            c.Detail = form.Name;
        });
        yield return ("policy", "exclude-glob", c =>
        {
            var glob = c.Pick(new[] { "[", "***", ";;;", "\\", "[z-a]", new string('*', 20000), "/hidden.0/*;[", "\u0000" });
            c.SetOption("--exclude", glob);
            c.Detail = $"--exclude '{(glob.Length > 20 ? glob[..20] + "…" : glob)}'";
        });

        // ---- data: bad calibration / validation files ------------------------------------------------------------
        yield return ("data", "npz", ApplyData);
    }

    /// <summary>
    /// Routes the model input through an If (or Loop) node whose subgraphs are broken one way: missing branch, cycle,
    /// unknown op, undefined value, wrong outputs, or nesting far deeper than any real model.
    /// </summary>
    private static void ApplySubgraph(Context c)
    {
        var graph = c.Graph;
        var input = graph.Input[0].Name;
        var routed = "routed_input";
        foreach (var n in graph.Node)
            for (var i = 0; i < n.Input.Count; i++)
                if (n.Input[i] == input) n.Input[i] = routed;
        graph.Initializer.Add(new TensorProto { Name = "cond", DataType = (int)DataType.Bool, RawData = ByteString.CopyFrom(1) });

        static GraphProto Identity(string from, string to, string name) => new()
        {
            Name = name,
            Node = { new NodeProto { OpType = "Identity", Input = { from }, Output = { to }, Name = name + "/Identity" } },
            Output = { new ValueInfoProto { Name = to } },
        };
        NodeProto If(GraphProto then, GraphProto? otherwise, string output)
        {
            var node = new NodeProto { OpType = "If", Name = "/route/If", Input = { "cond" }, Output = { output } };
            node.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = then });
            if (otherwise is not null) node.Attribute.Add(new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = otherwise });
            return node;
        }

        var form = c.Random.Next(8);
        NodeProto node;
        switch (form)
        {
            case 0: node = If(Identity(input, "t", "then"), null, routed); break;
            case 1:
                var cyclic = Identity("c2", "c1", "then");
                cyclic.Node.Add(new NodeProto { OpType = "Identity", Input = { "c1" }, Output = { "c2" }, Name = "then/second" });
                node = If(cyclic, Identity(input, "e", "else"), routed);
                break;
            case 2:
                var unknown = Identity(input, "t", "then");
                unknown.Node[0].OpType = "NoSuchOp";
                node = If(unknown, Identity(input, "e", "else"), routed);
                break;
            case 3: node = If(Identity("undefined_value", "t", "then"), Identity(input, "e", "else"), routed); break;
            case 4:
                var noOutput = Identity(input, "t", "then");
                noOutput.Output.Clear();
                node = If(noOutput, Identity(input, "e", "else"), routed);
                break;
            case 5:
            case 6:
                // If inside If inside If…: a deep chain must be rejected with a code, not recurse without bound.
                var depth = form == 5 ? c.Random.Next(2, 8) : c.Random.Next(20, 40);
                var inner = Identity(input, "t0", "g0");
                for (var d = 1; d < depth; d++)
                {
                    var wrapper = new GraphProto { Name = $"g{d}", Output = { new ValueInfoProto { Name = $"t{d}" } } };
                    wrapper.Node.Add(If(inner, Identity(input, $"e{d}", $"e{d}"), $"t{d}"));
                    inner = wrapper;
                }
                node = If(inner, Identity(input, "e", "else"), routed);
                c.Detail = $"If nested {depth} deep";
                break;
            default:
                // Loop whose body has the wrong number of inputs and outputs.
                node = new NodeProto { OpType = "Loop", Name = "/route/Loop", Input = { "", "cond", input }, Output = { routed } };
                node.Attribute.Add(new AttributeProto { Name = "body", Type = AttributeProto.Types.AttributeType.Graph, G = Identity(input, "b", "body") });
                break;
        }
        graph.Node.Insert(0, node);
        if (c.Detail.Length == 0)
            c.Detail = new[] { "If without else_branch", "cycle in then_branch", "unknown op in then_branch", "then_branch reads an undefined value", "then_branch without outputs", "", "", "Loop body with wrong arity" }[form];
    }

    private static void ApplyData(Context c)
    {
        var path = Path.Combine(c.In, "bad.npz");
        var r = c.Random;
        var n = 8;
        Files.NpyArray Image(string descr = "<f4", long[]? shape = null, string name = "image", byte[]? data = null)
        {
            shape ??= [n, 1, 28, 28];
            var count = shape.Aggregate(1L, (a, b) => a * Math.Max(b, 0));
            var size = descr.Length > 2 && int.TryParse(descr[2..], out var s) ? s : 4;
            return new Files.NpyArray(name, Files.Header(descr, shape), data ?? new byte[Math.Min(count * size, 1 << 24)]);
        }
        var label = new Files.NpyArray("label", Files.Header("<i8", [n]), Files.Labels(r, n));
        var forms = new (string Name, Action Write)[]
        {
            ("wrong key", () => Files.WriteNpz(path, [Image(name: "img"), label])),
            ("no arrays", () => Files.WriteNpz(path, [])),
            ("wrong shape", () => Files.WriteNpz(path, [Image(shape: r.Next(4) switch { 0 => [n, 784], 1 => [n, 1, 28], 2 => [n, 3, 28, 28], _ => [n, 1, 28, 29] }), label])),
            ("zero samples", () => Files.WriteNpz(path, [Image(shape: [0, 1, 28, 28]), new Files.NpyArray("label", Files.Header("<i8", [0]), [])])),
            ("wrong dtype", () => Files.WriteNpz(path, [Image(descr: r.Next(8) switch { 0 => "<f8", 1 => "<i4", 2 => "|u1", 3 => "<f2", 4 => ">f4", 5 => "|b1", 6 => "<c8", _ => "<U4" }), label])),
            ("object array", () => Files.WriteNpz(path, [new Files.NpyArray("image", Files.Header("|O", [n, 1, 28, 28]), [0x80, 0x02, (byte)'c', (byte)'o', (byte)'s', 0x0a, (byte)'s', (byte)'y', (byte)'s', 0x0a, (byte)'.']), label])),
            ("data shorter than shape", () => Files.WriteNpz(path, [Image(data: new byte[r.Next(100)]), label])),
            ("huge shape", () => Files.WriteNpz(path, [new Files.NpyArray("image", Files.Header("<f4", [1L << 40, 1, 28, 28]), new byte[64]), label])),
            ("negative shape", () => Files.WriteNpz(path, [new Files.NpyArray("image", Files.Header("<f4", [-8, 1, 28, 28]), new byte[64]), label])),
            ("header garbage", () => Files.WriteNpz(path, [new Files.NpyArray("image", r.Next(4) switch { 0 => "{'descr': '<f4'", 1 => "", 2 => "not a dict", _ => "{'descr': '<f4', 'fortran_order': False, 'shape': (8, 1, 28, 28), 'shape': (" }, new byte[64]), label])),
            ("non-numeric shape", () => Files.WriteNpz(path, [new Files.NpyArray("image", "{'descr': '<f4', 'fortran_order': False, 'shape': ('a', 1), }", new byte[64]), label])),
            ("fortran order", () => Files.WriteNpz(path, [new Files.NpyArray("image", Files.Header("<f4", [n, 1, 28, 28], fortran: true), new byte[n * 784 * 4]), label])),
            ("npy version 9", () => Files.WriteNpz(path, [Image() with { Major = 9 }, label])),
            ("labels out of range", () => Files.WriteNpz(path, [Image(), new Files.NpyArray("label", Files.Header("<i8", [n]), Enumerable.Repeat(r.Next(2) == 0 ? -1L : 99L, n).SelectMany(BitConverter.GetBytes).ToArray())])),
            ("labels float", () => Files.WriteNpz(path, [Image(), new Files.NpyArray("label", Files.Header("<f4", [n]), new byte[n * 4])])),
            ("labels count", () => Files.WriteNpz(path, [Image(), new Files.NpyArray("label", Files.Header("<i8", [n - 3]), new byte[(n - 3) * 8])])),
            ("non-finite values", () => Files.WriteNpz(path, [Image(data: Enumerable.Repeat(r.Next(2) == 0 ? float.NaN : float.PositiveInfinity, n * 784).SelectMany(BitConverter.GetBytes).ToArray()), label])),
            ("entry not .npy", () => Files.WriteNpz(path, [Image(), label], ".bin")),
            ("truncated zip", () => { Files.WriteNpz(path, [Image(), label]); var b = File.ReadAllBytes(path); File.WriteAllBytes(path, b[..r.Next(b.Length)]); }),
            ("flipped zip", () => { Files.WriteNpz(path, [Image(), label]); var b = File.ReadAllBytes(path); for (var i = 0; i < 8; i++) b[r.Next(b.Length)] ^= 0xFF; File.WriteAllBytes(path, b); }),
            ("not a zip", () => { var b = new byte[r.Next(1, 4096)]; r.NextBytes(b); File.WriteAllBytes(path, b); }),
            ("empty file", () => File.WriteAllBytes(path, [])),
        };
        var form = c.Pick(forms);
        form.Write();
        // The same bad file as calibration data (static int8) or as the gate's validation data.
        if (r.Next(2) == 0)
        {
            c.Policy.Clear();
            c.Policy.AddRange(["--quantize", "int8", "--calibration-data", path]);
            c.Detail = $"calibration: {form.Name}";
        }
        else
        {
            c.SetOption("--validation-data", path);
            c.SetOption("--latency-rounds", "1");
            c.Detail = $"validation: {form.Name}";
        }
    }
}
