namespace ModelCompression.Cli.Tests;

/// <summary>Redirected output (CI logs, MSBuild) gets a line per stage and, in a long stage, the time left.</summary>
[TestClass]
public sealed class ProgressLinesTests
{
    private sealed class ManualTime : TimeProvider
    {
        public long Now;
        public override long TimestampFrequency => TimeSpan.TicksPerSecond;
        public override long GetTimestamp() => Now;
        public void Advance(TimeSpan span) => Now += span.Ticks;
    }

    [TestMethod]
    public void LongStage_GetsALineEvery30Seconds_WithTheTimeLeftAtThePaceSoFar()
    {
        var time = new ManualTime();
        var output = new StringWriter();
        var progress = new ProgressLines(output, time);
        progress.Report(("prune", 0));
        time.Advance(TimeSpan.FromSeconds(10));
        progress.Report(("prune", 0.05));              // under 30 s since the last line: quiet
        time.Advance(TimeSpan.FromSeconds(50));
        progress.Report(("prune", 0.25));              // 60 s for a quarter: three minutes left
        time.Advance(TimeSpan.FromSeconds(5));
        progress.Report(("prune", 0.26));              // quiet again
        time.Advance(TimeSpan.FromMinutes(60));
        progress.Report(("prune", 0.5));               // 61 min for half: 61 min left
        progress.Report(("gate", 0));
        time.Advance(TimeSpan.FromMinutes(1));
        progress.Report(("gate", 1));                  // done: no estimate
        var lines = output.ToString().Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);
        CollectionAssert.AreEqual(new[] { "  prune…", "  prune: 25 %, about 3 min left", "  prune: 50 %, about 1 h 01 min left", "  gate…" }, lines);
    }

    [TestMethod]
    public void Duration_IsAsPreciseAsAGuessDeserves()
    {
        Assert.AreEqual("1 s", ProgressLines.Duration(TimeSpan.FromMilliseconds(200)));
        Assert.AreEqual("42 s", ProgressLines.Duration(TimeSpan.FromSeconds(42)));
        Assert.AreEqual("7 min", ProgressLines.Duration(TimeSpan.FromSeconds(7 * 60 + 20)));
        Assert.AreEqual("2 h 00 min", ProgressLines.Duration(TimeSpan.FromMinutes(120)));
    }
}
