using ModelCompression.Calibration;
using ModelCompression.Policy;
using ModelCompression.Quantization;

namespace ModelCompression.Tests.Quantization;

[TestClass]
public sealed class CalibratorTests
{
    private static float[] Normal(Random random, int count, float sigma = 1f)
    {
        var values = new float[count];
        for (var i = 0; i < count; i++)
            values[i] = sigma * (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        return values;
    }

    private static void CollectInBatches(ActivationCalibrator calibrator, float[] values, int batch)
    {
        for (var start = 0; start < values.Length; start += batch)
            calibrator.Collect(values.AsSpan(start, Math.Min(batch, values.Length - start)));
    }

    [TestMethod]
    public void MinMax_OverSeveralBatches_ReturnsTheExactObservedRange()
    {
        var values = Normal(new Random(1), 10_001, sigma: 3f);
        var calibrator = ActivationCalibrator.Create(CalibrationMethod.MinMax, 99.99);
        CollectInBatches(calibrator, values, 777);

        var range = calibrator.ComputeRange();

        Assert.AreEqual(values.Min(), range.Min);
        Assert.AreEqual(values.Max(), range.Max);
        Assert.AreEqual(values.Length, calibrator.Count);
    }

    [TestMethod]
    public void MinMax_IgnoresNaNAndInfinity()
    {
        var calibrator = new MinMaxCalibrator();
        calibrator.Collect([1f, float.NaN, -2f, float.PositiveInfinity, 0.5f, float.NegativeInfinity, 3f, 0f, -1f, 2f, 1f, 1f, 1f, 1f, 1f, 1f, 1f, 1f, 1f]);
        calibrator.Collect([float.NaN]);

        Assert.AreEqual(new ActivationRange(-2f, 3f), calibrator.ComputeRange());
    }

    [TestMethod]
    public void Percentile_ClipsASingleOutlier()
    {
        var values = Normal(new Random(2), 200_000);
        values[12_345] = 1000f;
        var minMax = new MinMaxCalibrator();
        var percentile = new PercentileCalibrator(99.99);
        CollectInBatches(minMax, values, 4096);
        CollectInBatches(percentile, values, 4096);

        var range = percentile.ComputeRange();

        Assert.AreEqual(1000f, minMax.ComputeRange().Max);
        // |x| of a standard normal exceeds 3.89 with probability 1e-4: the 99.99th percentile sits there, not at 1000.
        Assert.IsTrue(range.Max is > 3.5f and < 4.5f, $"percentile range max {range.Max}");
        Assert.IsTrue(range.Min is < -3.5f and > -4.5f, $"percentile range min {range.Min}");
    }

    [TestMethod]
    public void Entropy_OnAHeavyTailedDistribution_ClipsBelowTheMaximum()
    {
        // ReLU of a Student-t-like tail: most mass near 0, rare values up to ~100.
        var random = new Random(3);
        var values = new float[200_000];
        for (var i = 0; i < values.Length; i++)
        {
            var normal = Normal(random, 2);
            values[i] = Math.Max(0f, normal[0] / Math.Max(0.01f, Math.Abs(normal[1])));
        }
        var entropy = new EntropyCalibrator();
        CollectInBatches(entropy, values, 8192);

        var range = entropy.ComputeRange();

        Assert.AreEqual(0f, range.Min);
        Assert.IsTrue(range.Max < 0.5f * entropy.ObservedRange.Max, $"entropy range max {range.Max} vs observed max {entropy.ObservedRange.Max}");
        Assert.IsTrue(range.Max > 1f, $"entropy range max {range.Max} clips the bulk of the distribution");
    }

    [TestMethod]
    public void Entropy_OnAUniformDistribution_KeepsAlmostTheWholeRange()
    {
        var random = new Random(4);
        var values = Enumerable.Range(0, 100_000).Select(_ => (float)random.NextDouble() * 6f).ToArray();
        var entropy = new EntropyCalibrator();
        CollectInBatches(entropy, values, 10_000);

        var range = entropy.ComputeRange();

        Assert.IsTrue(range.Max > 0.9f * 6f, $"entropy clipped a uniform distribution at {range.Max}");
    }

    [TestMethod]
    public void StreamingHistogram_WithAGrowingRange_EqualsAOneShotHistogram()
    {
        var random = new Random(5);
        // Batches whose largest |x| grows from ~1 to ~300: the edge doubles several times along the way.
        var batches = new[] { 1f, 0.5f, 7f, 3f, 300f, 20f }.Select(scale => Normal(random, 5000, scale)).ToArray();
        var streaming = new StreamingHistogram(2048);
        foreach (var batch in batches) streaming.Add(batch);

        var oneShot = new StreamingHistogram(2048, streaming.UpperEdge);
        oneShot.Add(batches.SelectMany(b => b).ToArray());

        Assert.AreEqual(oneShot.UpperEdge, streaming.UpperEdge);
        Assert.AreEqual(30_000L, streaming.Total);
        CollectionAssert.AreEqual(oneShot.Counts.ToArray(), streaming.Counts.ToArray());
        Assert.IsTrue(streaming.UpperEdge > batches.Max(b => b.Max(Math.Abs)), "the edge covers every value");
    }

    [TestMethod]
    public void StreamingHistogram_Quantile_MatchesTheSortedData()
    {
        var values = Normal(new Random(6), 50_000);
        var histogram = new StreamingHistogram(2048);
        histogram.Add(values);

        var sorted = values.Select(Math.Abs).Order().ToArray();
        var exact = sorted[(int)(0.99 * sorted.Length)];

        Assert.AreEqual(exact, histogram.Quantile(0.99), 2 * histogram.BinWidth);
    }

    [TestMethod]
    public void ActivationQuantization_FromRange_MakesZeroExactAndNonNegativeRangesUnsigned()
    {
        var relu = ActivationQuantization.FromRange(new ActivationRange(0f, 10.2f));
        var signed = ActivationQuantization.FromRange(new ActivationRange(-1f, 3f));
        var constant = ActivationQuantization.FromRange(new ActivationRange(0f, 0f));

        Assert.AreEqual((byte)0, relu.ZeroPoint);
        Assert.AreEqual(10.2f / 255f, relu.Scale, 1e-7f);
        Assert.AreEqual((byte)64, signed.ZeroPoint);
        Assert.AreEqual(4f / 255f, signed.Scale, 1e-7f);
        Assert.AreEqual(1f, constant.Scale);
    }

    [TestMethod]
    public void QuantizePerChannel_ErrorIsWithinHalfAStepPerWeight()
    {
        var random = new Random(7);
        const int rows = 16, cols = 50;
        var w = Enumerable.Range(0, rows * cols).Select(i => (float)(random.NextDouble() - 0.5) * (1 + i / cols)).ToArray();

        var q = Int8Quantizer.QuantizePerChannel(w, rows, cols);

        for (var o = 0; o < rows; o++)
        {
            var row = w.AsSpan(o * cols, cols).ToArray();
            // absMax/127 rounded up onto the float16 grid: never below it, at most 2^-10 above, and exact in float16.
            var exact = row.Max(Math.Abs) / 127f;
            Assert.IsTrue(q.Scales[o] >= exact && q.Scales[o] <= exact * (1 + 1f / 1024), $"scale {q.Scales[o]} for {exact}");
            Assert.AreEqual(q.Scales[o], (float)(Half)q.Scales[o]);
            Assert.IsTrue(q.Values.AsSpan(o * cols, cols).ToArray().All(v => v is >= -127 and <= 127));
            for (var i = 0; i < cols; i++)
                Assert.IsTrue(Math.Abs(row[i] - q.Values[o * cols + i] * q.Scales[o]) <= 0.5f * q.Scales[o] * 1.0001f);
        }
        Assert.IsTrue(q.RelativeError is > 0 and < 0.01, $"relative error {q.RelativeError}");
    }

    [TestMethod]
    public void QuantizeColumns_OfTheTranspose_GivesTheCodesAndScalesOfTheRowRule()
    {
        // Sizes that are not multiples of the vector width nor of the 16-row work chunks, with ties (x.5 steps) and a zero channel.
        var random = new Random(11);
        const int outs = 37, ins = 53;
        var w = Enumerable.Range(0, outs * ins).Select(i => (float)(random.NextDouble() - 0.5) * (1 + i % 7)).ToArray();
        for (var i = 0; i < ins; i++) w[5 * ins + i] = 0;
        w[3 * ins] = 127f; w[3 * ins + 1] = 0.5f; w[3 * ins + 2] = -1.5f;
        var inOut = ModelCompression.Passes.WeightedLayer.Transpose(w, outs, ins);

        var rows = Int8Quantizer.QuantizePerChannel(w, outs, ins);
        var columns = new sbyte[w.Length];
        var (scales, error) = Int8Quantizer.QuantizeColumns(inOut, outs, ins, columns);

        CollectionAssert.AreEqual(rows.Scales, scales);
        for (var o = 0; o < outs; o++)
            for (var i = 0; i < ins; i++)
            {
                Assert.AreEqual(rows.Values[o * ins + i], columns[i * outs + o], $"[{o}, {i}]");
                Assert.AreEqual((sbyte)Math.Clamp(MathF.Round(w[o * ins + i] / scales[o], MidpointRounding.ToEven), -127, 127), rows.Values[o * ins + i], $"scalar rule at [{o}, {i}]");
            }
        Assert.AreEqual(rows.RelativeError, error, 1e-6);
        // Channel 3 has a scale of exactly 1: ties round to even (0.5 → 0, −1.5 → −2); the all-zero channel 5 gets scale 1.
        Assert.AreEqual(1f, scales[3]);
        Assert.AreEqual((sbyte)0, columns[1 * outs + 3]);
        Assert.AreEqual((sbyte)-2, columns[2 * outs + 3]);
        Assert.AreEqual(1f, scales[5]);
    }

    [TestMethod]
    public void OnHalfGrid_RoundsUpWithinTwoToTheMinusTenOrLeavesTheScale()
    {
        Assert.AreEqual(0.5f, Int8Quantizer.OnHalfGrid(0.5f));
        var up = Int8Quantizer.OnHalfGrid(0.1f);
        Assert.IsTrue(up > 0.1f && up <= 0.1f * (1 + 1f / 1024) && up == (float)(Half)up);
        Assert.AreEqual(1e-7f, Int8Quantizer.OnHalfGrid(1e-7f)); // below float16's normal range: kept as it is
        Assert.AreEqual(1e6f, Int8Quantizer.OnHalfGrid(1e6f));   // above float16's range
    }
}
