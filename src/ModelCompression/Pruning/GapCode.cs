namespace ModelCompression.Pruning;

/// <summary>
/// A b-bit code for the gaps between a tensor's nonzeros: codes 0…k−1 advance 1…k positions and emit the next
/// value; codes k…2^b−1 are skips that advance k, k·r, k·r², … positions without a value. Every gap g is written as
/// skips summing to a multiple of k followed by the one emit code with the right remainder, and since each skip
/// divides the next, taking the largest skips first is optimal. Chosen per tensor to make the codes smallest:
/// b = 1 with k = 1 is a plain bitmask; b = 2 or 4 with long skips suits 80–95 % sparsity with long zero runs.
/// </summary>
internal sealed record GapCode(int Bits, int Emits, long[] Skips)
{
    private static readonly int[] Widths = [1, 2, 4, 8];
    private static readonly int[] Ratios = [2, 3, 4, 8];

    public int Size => 1 << Bits;

    /// <summary>Positions each code advances.</summary>
    public long[] Steps => Enumerable.Range(0, Size).Select(c => c < Emits ? c + 1 : Skips[c - Emits]).ToArray();

    /// <summary>The cheapest code for these gap counts (by packed bytes), over the code widths, emit counts and skip ratios.</summary>
    public static GapCode Best(IReadOnlyDictionary<long, long> gapCounts) =>
        Widths.SelectMany(bits => Enumerable.Range(1, (1 << bits) - 1).SelectMany(k => Ratios.Select(r => Create(bits, k, r))))
            .Distinct(new SameSteps())
            .MinBy(code => (code.Entries(gapCounts) * code.Bits + 7) / 8)!;

    private static GapCode Create(int bits, int emits, int ratio)
    {
        var skips = new long[(1 << bits) - emits];
        for (var i = 0; i < skips.Length; i++) skips[i] = i == 0 ? emits : Math.Min(skips[i - 1] * ratio, 1L << 40);
        return new GapCode(bits, emits, skips);
    }

    /// <summary>Codes needed for all gaps.</summary>
    public long Entries(IReadOnlyDictionary<long, long> gapCounts)
    {
        long total = 0;
        foreach (var (gap, count) in gapCounts) total += count * (SkipsFor(gap).Count() + 1);
        return total;
    }

    /// <summary>The code sequence for one gap (distance from the previous nonzero, or from position −1).</summary>
    public IEnumerable<byte> Encode(long gap)
    {
        foreach (var skip in SkipsFor(gap)) yield return (byte)skip;
        yield return (byte)((gap - 1) % Emits);
    }

    /// <summary>Skip codes (as code values) for the multiple-of-k part of a gap, largest skips first.</summary>
    private IEnumerable<int> SkipsFor(long gap)
    {
        var rest = gap - ((gap - 1) % Emits + 1);
        for (var i = Skips.Length - 1; i >= 0 && rest > 0; i--)
            for (; rest >= Skips[i]; rest -= Skips[i]) yield return Emits + i;
    }

    private sealed class SameSteps : IEqualityComparer<GapCode>
    {
        public bool Equals(GapCode? a, GapCode? b) => a!.Bits == b!.Bits && a.Steps.SequenceEqual(b.Steps) && a.Emits == b.Emits;
        public int GetHashCode(GapCode code) => HashCode.Combine(code.Bits, code.Emits, code.Skips.Length > 1 ? code.Skips[1] : 0);
    }
}
