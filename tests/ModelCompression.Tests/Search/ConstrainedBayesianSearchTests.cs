using ModelCompression.Search;

namespace ModelCompression.Tests.Search;

[TestClass]
public sealed class ConstrainedBayesianSearchTests
{
    // A compression-shaped problem: both knobs shrink the model (objective) and cost accuracy (constraint), the second
    // knob more steeply; the optimum lies on the constraint's boundary.
    private static Observation Problem(double[] x) => new(2 - x[0] - 0.6 * x[1], [0.02 * x[0] * x[0] + 0.05 * Math.Pow(x[1], 3)]);

    private static double TrueOptimum()
    {
        var best = double.PositiveInfinity;
        for (var i = 0; i <= 400; i++)
            for (var j = 0; j <= 400; j++)
            {
                var o = Problem([i / 400.0, j / 400.0]);
                if (o.Constraints[0] <= 0.01) best = Math.Min(best, o.Objective);
            }
        return best;
    }

    [TestMethod]
    public void FindsAFeasiblePointNearTheConstrainedOptimumInFewTrials()
    {
        var result = ConstrainedBayesianSearch.Run(2, [new SearchConstraint("drop", 0.01, 0)], 16, null, 0, Problem);
        Assert.AreEqual(16, result.Trials.Count);
        Assert.IsNotNull(result.Best);
        Assert.IsTrue(result.Best.Outcome.Constraints[0] <= 0.01);
        var optimum = TrueOptimum();
        // Within 3 % of the optimum of a 160,000-point grid, from 16 evaluations.
        Assert.IsTrue(result.Best.Outcome.Objective <= optimum * 1.03, $"best {result.Best.Outcome.Objective:0.0000} vs optimum {optimum:0.0000}");
        // Better than the best point a 4×4 grid (the same 16 evaluations) finds.
        var grid = Enumerable.Range(0, 16).Select(k => Problem([(k % 4) / 3.0, (k / 4) / 3.0])).Where(o => o.Constraints[0] <= 0.01).Min(o => o.Objective);
        Assert.IsTrue(result.Best.Outcome.Objective < grid, $"search {result.Best.Outcome.Objective:0.0000} vs grid {grid:0.0000}");
    }

    [TestMethod]
    public void AnchorsAreTriedFirst_AndTheSearchEndsNoWorseThanTheBestOfThem()
    {
        double[][] anchors = [[0.6, 0.3], [0.3, 0.5]]; // both feasible
        var result = ConstrainedBayesianSearch.Run(2, [new SearchConstraint("drop", 0.01, 0)], 8, null, 0, Problem, anchors: anchors);
        CollectionAssert.AreEqual(anchors[0], result.Trials[0].Knobs);
        CollectionAssert.AreEqual(anchors[1], result.Trials[1].Knobs);
        // Then the centre: the anchors replace part of the space-filling start, not all of it.
        CollectionAssert.AreEqual(new[] { 0.5, 0.5 }, result.Trials[2].Knobs);
        var anchored = result.Trials.Take(2).Where(t => t.Feasible).Min(t => t.Outcome.Objective);
        Assert.IsTrue(result.Best!.Outcome.Objective <= anchored);
    }

    [TestMethod]
    public void SameSeedSameTrials_OtherSeedOtherTrials()
    {
        string Run(int seed) => string.Join(";", ConstrainedBayesianSearch.Run(2, [new SearchConstraint("drop", 0.01, 0)], 8, null, seed, Problem)
            .Trials.Select(t => string.Join(",", t.Knobs.Select(k => k.ToString("R")))));
        Assert.AreEqual(Run(3), Run(3));
        Assert.AreNotEqual(Run(3), Run(4));
    }

    [TestMethod]
    public void TargetsTheOriginalBreaksCoolTowardTheLimit_OthersHoldTheirLimit()
    {
        var size = new SearchConstraint("size", 0.2, 1.0);
        Assert.AreEqual(0.92, ConstrainedBayesianSearch.Target(size, 0, 10), 1e-12);
        Assert.AreEqual(0.6, ConstrainedBayesianSearch.Target(size, 4, 10), 1e-12);
        Assert.AreEqual(0.2, ConstrainedBayesianSearch.Target(size, 9, 10), 1e-12);
        var drop = new SearchConstraint("drop", 0.01, 0);
        Assert.AreEqual(0.01, ConstrainedBayesianSearch.Target(drop, 0, 10), 1e-12);

        // Trials record the target they were judged against; feasibility is always against the final limit.
        var result = ConstrainedBayesianSearch.Run(1, [size], 5, null, 0, x => new Observation(x[0], [1 - 0.9 * x[0]]));
        CollectionAssert.AreEqual(new[] { 0.84, 0.68, 0.52, 0.36, 0.2 }, result.Trials.Select(t => Math.Round(t.Targets[0], 10)).ToArray());
        Assert.IsTrue(result.Trials.All(t => t.Feasible == (t.Outcome.Constraints[0] <= 0.2)));
    }

    [TestMethod]
    public void FailedTrialsAndTimeBudget()
    {
        // A trial that produced nothing usable (NaN) is never the answer, and the search goes on around it.
        var result = ConstrainedBayesianSearch.Run(1, [new SearchConstraint("drop", 0.5, 0)], 6, null, 0,
            x => x[0] > 0.7 ? new Observation(double.NaN, [double.NaN]) : new Observation(1 - x[0], [x[0]]));
        Assert.AreEqual(6, result.Trials.Count);
        Assert.IsTrue(result.Best!.Knobs[0] <= 0.5);
        // A zero time budget still runs one trial.
        var once = ConstrainedBayesianSearch.Run(1, [new SearchConstraint("drop", 0.5, 0)], 6, TimeSpan.Zero, 0, x => new Observation(x[0], [0]));
        Assert.AreEqual(1, once.Trials.Count);
    }
}
