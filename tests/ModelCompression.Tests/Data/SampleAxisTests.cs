using Google.Protobuf;
using ModelCompression.Data;
using ModelCompression.Diagnostics;
using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Runtime;

namespace ModelCompression.Tests.Data;

/// <summary>
/// Models that do not take samples on axis 0 of every input: Silero VAD v4 (scalar <c>sr</c>, state <c>h</c>/<c>c</c>
/// [2, batch, 64]) and a model fixed at batch 1, through the real ONNX Runtime.
/// </summary>
[TestClass]
public sealed class SampleAxisTests
{
    private static string Silero => Fixtures.PathOf("silero_vad_v4.onnx");
    private static string _dir = null!;

    [ClassInitialize]
    public static void Setup(TestContext _) => _dir = Directory.CreateTempSubdirectory("mc-axes").FullName;

    private static string TempPath(string name) => Path.Combine(_dir, Guid.NewGuid().ToString("N")[..8] + "-" + name);

    private static Dataset Bound(string data, string model)
    {
        using var onnx = OnnxModel.Load(model);
        return Dataset.Load(data).BindTo(ModelInput.FromGraph(onnx.Graph));
    }

    private static NdArray Floats(string name, long[] shape, float[] values) => new(name, shape, ArrayElementType.Float32, values);
    private static NdArray Rate(long value) => new("sr", [], ArrayElementType.Int64, new[] { value });

    [TestMethod]
    public void Silero_StateIsSlicedOnAxis1_RateIsFedWhole_AndBatchingChangesNoOutput()
    {
        var generated = SileroData.Generate(7);
        var data = Bound(generated.Write(TempPath("silero.npz")), Silero);
        Assert.AreEqual(7, data.Count);
        var axes = data.Inputs.Select(a => a.Name).Zip(data.SampleAxes).ToDictionary(p => p.First, p => p.Second);
        Assert.AreEqual(0, axes["input"]);
        Assert.IsNull(axes["sr"]);
        Assert.AreEqual(1, axes["h"]);
        Assert.AreEqual(1, axes["c"]);
        Assert.AreEqual("batch", data.BatchSymbol);

        using var session = OnnxRuntimeSession.Create(Silero, Fixtures.Cpu);
        var batched = Predictions.RunAll(session, data, 3);
        var single = Predictions.RunAll(session, data, 1);
        CollectionAssert.AreEqual(new long[] { 7, 1 }, batched["output"].Shape);
        CollectionAssert.AreEqual(new long[] { 7, 2, 64 }, batched["hn"].Shape, "the state's batch axis is moved first");
        foreach (var name in new[] { "output", "hn", "cn" })
            for (var i = 0; i < batched[name].Data.Length; i++)
                Assert.AreEqual(single[name].Data[i], batched[name].Data[i], 1e-5f, $"{name}[{i}]");

        // Sample 5 fed by hand with its own state: the joined outputs hold its results in row 5.
        const int s = 5;
        var alone = session.Run(
        [
            Floats("input", [1, SileroData.Chunk], generated.Input.AsSpan(s * SileroData.Chunk, SileroData.Chunk).ToArray()), Rate(16000),
            Floats("h", [2, 1, 64], generated.StateOf(generated.H, s)), Floats("c", [2, 1, 64], generated.StateOf(generated.C, s)),
        ]);
        Assert.AreEqual(alone["output"].Data[0], batched["output"].Data[s], 1e-5f);
        CollectionAssert.AreEqual(alone["hn"].Data.Select(v => MathF.Round(v, 4)).ToArray(), batched["hn"].Data.AsSpan(s * 128, 128).ToArray().Select(v => MathF.Round(v, 4)).ToArray());
        // Each sample's own chunk and state give it its own probability: the comparisons above are not between constants.
        Assert.HasCount(7, batched["output"].Data.Distinct(), string.Join(", ", batched["output"].Data));
    }

    [TestMethod]
    public void Silero_WithoutATechnique_GatesTheIdenticalModel_DecisionAgreement1_OnEveryOutput()
    {
        var dir = Directory.CreateTempSubdirectory("mc-axes-run").FullName;
        var validation = SileroData.Generate(10).Write(Path.Combine(dir, "val.npz"));
        var result = CompressionEngine.Compress(new(Silero, Path.Combine(dir, "out.onnx"), dir,
            Fixtures.Policy(("ValidationData", validation), ("BatchSize", "4"), ("LatencyRounds", "1"), ("MinDecisionAgreement", "1.0"))));
        Assert.IsTrue(result.Report.Verdict.Passed, string.Join("; ", result.Report.Verdict.Failures.Select(f => f.Message)));
        var outputs = result.Report.Measurements.Outputs.ToDictionary(o => o.Name);
        Assert.AreEqual(1.0, outputs["output"].DecisionAgreement);
        CollectionAssert.AreEqual(new long[] { 10, 1 }, outputs["output"].Shape);
        CollectionAssert.AreEqual(new long[] { 10, 2, 64 }, outputs["hn"].Shape);
        Assert.IsTrue(outputs.Values.All(o => o.Cosine == 1 && o.MaxAbsError == 0), "the same model on the same batches");
        Assert.AreEqual(4, result.Report.Measurements.BatchSize);
    }

    [TestMethod]
    public void SampleCountsThatDisagree_AreCM0121_NamingTheFileAndEachInputsAxis()
    {
        var path = SileroData.Generate(4).Write(TempPath("short-state.npz"), hSamples: 3);
        var e = Assert.ThrowsExactly<CompressionException>(() => Bound(path, Silero));
        Assert.AreEqual(DiagnosticCodes.InvalidData, e.Code);
        Assert.AreEqual(path, e.Diagnostics[0].File);
        StringAssert.Contains(e.Message, "disagree on the number of samples");
        StringAssert.Contains(e.Message, "'input' [4,1536] has 4 on axis 0");
        StringAssert.Contains(e.Message, "'h' [2,3,64] has 3 on axis 1");
        StringAssert.Contains(e.Message, "'c' [2,4,64] has 4 on axis 1");
    }

    [TestMethod]
    public void OnnxTestDataFolders_AreJoinedOnEachInputsAxis_OrFedSetBySetWhenAWholeInputDiffers()
    {
        var generated = SileroData.Generate(3);
        string Folder(params long[] rates)
        {
            var dir = Directory.CreateDirectory(TempPath("sets")).FullName;
            for (var s = 0; s < 3; s++)
            {
                var set = Directory.CreateDirectory(Path.Combine(dir, $"test_data_set_{s}")).FullName;
                TensorProto[] tensors =
                [
                    Tensors.FromFloats("input", [1, SileroData.Chunk], generated.Input.AsSpan(s * SileroData.Chunk, SileroData.Chunk).ToArray()),
                    new() { Name = "sr", DataType = (int)TensorProto.Types.DataType.Int64, Int64Data = { rates[s] } },
                    Tensors.FromFloats("h", [2, 1, 64], generated.StateOf(generated.H, s)),
                    Tensors.FromFloats("c", [2, 1, 64], generated.StateOf(generated.C, s)),
                ];
                for (var k = 0; k < tensors.Length; k++) File.WriteAllBytes(Path.Combine(set, $"input_{k}.pb"), tensors[k].ToByteArray());
            }
            return dir;
        }
        using var session = OnnxRuntimeSession.Create(Silero, Fixtures.Cpu);
        var fromNpz = Predictions.RunAll(session, Bound(generated.Write(TempPath("silero.npz")), Silero), 8);

        var joined = Bound(Folder(16000, 16000, 16000), Silero);
        CollectionAssert.AreEqual(new long[] { 2, 3, 64 }, joined.Inputs.Single(a => a.Name == "h").Shape, "three sets joined on the state's batch axis");
        Assert.HasCount(1, joined.Batches(8), "one run for all three");
        var fromFolder = Predictions.RunAll(session, joined, 8);
        foreach (var name in new[] { "output", "hn", "cn" })
            CollectionAssert.AreEqual(fromNpz[name].Data.Select(v => MathF.Round(v, 4)).ToArray(), fromFolder[name].Data.Select(v => MathF.Round(v, 4)).ToArray(), name);

        // Sample rates that differ cannot share a run: each set is fed as stored, with its own rate.
        var apart = Bound(Folder(16000, 8000, 16000), Silero);
        Assert.AreEqual(3, apart.Count);
        Assert.HasCount(3, apart.Batches(8));
        var mixed = Predictions.RunAll(session, apart, 8)["output"];
        var at8k = session.Run(
        [
            Floats("input", [1, SileroData.Chunk], generated.Input.AsSpan(SileroData.Chunk, SileroData.Chunk).ToArray()), Rate(8000),
            Floats("h", [2, 1, 64], generated.StateOf(generated.H, 1)), Floats("c", [2, 1, 64], generated.StateOf(generated.C, 1)),
        ])["output"];
        Assert.AreEqual(at8k.Data[0], mixed.Data[1], 1e-5f);
        Assert.AreEqual(fromNpz["output"].Data[0], mixed.Data[0], 1e-5f);
    }

    /// <summary>The MLP with its batch dimension fixed at 1 (input and output), saved next to the test's files.</summary>
    private static string FixedBatchMlp()
    {
        using var model = OnnxModel.Load(Fixtures.Mlp);
        foreach (var value in new[] { model.Graph.Input[0], model.Graph.Output[0] })
            value.Type.TensorType.Shape.Dim[0] = new TensorShapeProto.Types.Dimension { DimValue = 1 };
        var path = TempPath("mlp_batch1.onnx");
        model.Save(path);
        return path;
    }

    [TestMethod]
    public void AModelFixedAtBatch1_IsFedOneSampleAtATime_InEvaluationAndLatency()
    {
        var path = FixedBatchMlp();
        var data = Bound(Fixtures.Validation, path).Take(20);
        Assert.AreEqual(1, data.MaxBatch);
        Assert.IsTrue(data.Batches(64).All(b => b.Samples == 1 && b[0].Shape[0] == 1));

        using var reference = OnnxModel.Load(Fixtures.Mlp);
        var expected = Predictions.Run(reference, Fixtures.ValidationData.Take(20), Fixtures.Cpu, 64);
        using var session = OnnxRuntimeSession.Create(path, Fixtures.Cpu);
        var actual = Predictions.Run(session, data, 64);
        CollectionAssert.AreEqual(expected.Shape, actual.Shape);
        for (var i = 0; i < expected.Data.Length; i++) Assert.AreEqual(expected.Data[i], actual.Data[i], 1e-4f, $"logit {i}");

        var measured = Gate.Measure(path, path, Fixtures.Policy(("ValidationData", "fmnist_val.npz"), ("LatencyRounds", "1")));
        Assert.AreEqual(1, measured.BatchSize, "latency is timed at the batch the model takes");
        Assert.AreEqual(1.0, measured.Outputs.Single().Agreement);
        Assert.AreEqual(2000, measured.Compressed!.Samples);
    }

    [TestMethod]
    public void ARunThatOnnxRuntimeRejects_IsCM0131_WithItsWholeMessage_NamingModelAndData()
    {
        // Every dimension of the MLP's input made unknown: 14×14 images bind, and ONNX Runtime fails inside the graph.
        using var model = OnnxModel.Load(Fixtures.Mlp);
        foreach (var dim in model.Graph.Input[0].Type.TensorType.Shape.Dim) dim.DimParam = "";
        var path = TempPath("mlp_any.onnx");
        model.Save(path);
        var data = Npz.Write(TempPath("small.npz"), Npz.Floats("image", [4, 1, 14, 14], 0.5f), Npz.Labels("label", 0, 1, 2, 3));

        var e = Assert.ThrowsExactly<CompressionException>(() => Gate.Measure(path, path, Fixtures.Policy(("ValidationData", data), ("LatencyRounds", "1"))));
        Assert.AreEqual(DiagnosticCodes.RuntimeFailure, e.Code);
        Assert.AreEqual(path, e.Diagnostics[0].File, "the diagnostic names the model");
        StringAssert.Contains(e.Message, $"samples 0..3 of '{data}'");
        var ort = ((Microsoft.ML.OnnxRuntime.OnnxRuntimeException)e.InnerException!).Message;
        foreach (var line in ort.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0))
            StringAssert.Contains(e.Message, line, "every line of ONNX Runtime's message is kept");
    }
}
