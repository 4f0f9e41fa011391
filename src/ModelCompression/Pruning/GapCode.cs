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
    private static readonly int[] Ratios = [2, 3, 4, 8, 16];

    public int Size => 1 << Bits;

    /// <summary>Positions each code advances (codes past the last skip are never written).</summary>
    public long[] Steps => Enumerable.Range(0, Size).Select(c => c < Emits ? c + 1 : c - Emits < Skips.Length ? Skips[c - Emits] : 1).ToArray();

    /// <summary>The cheapest code for these gap counts (by packed bytes), over the code widths, emit counts and skip ratios.</summary>
    public static GapCode Best(IReadOnlyDictionary<long, long> gapCounts)
    {
        var longest = gapCounts.Keys.DefaultIfEmpty(1).Max();
        var gaps = gapCounts.ToArray();
        GapCode? best = null;
        var bestBytes = long.MaxValue;
        foreach (var bits in Widths)
            for (var k = 1; k < 1 << bits; k++)
                foreach (var ratio in Ratios)
                {
                    var code = Create(bits, k, ratio, longest);
                    var bytes = (code.Entries(gaps) * bits + 7) / 8;
                    if (bytes < bestBytes) (best, bestBytes) = (code, bytes);
                    if (code.Skips.Length <= 1) break; // the ratio only matters with two skips or more
                }
        return best!;
    }

    /// <summary>Skips k, k·r, k·r², … as far as the longest gap needs and the code width allows.</summary>
    private static GapCode Create(int bits, int emits, int ratio, long longest)
    {
        var skips = new List<long> { emits };
        while (skips.Count < (1 << bits) - emits && skips[^1] * ratio <= longest) skips.Add(skips[^1] * ratio);
        return new GapCode(bits, emits, skips.ToArray());
    }

    /// <summary>Codes needed for all gaps.</summary>
    public long Entries(IEnumerable<KeyValuePair<long, long>> gapCounts)
    {
        long total = 0;
        foreach (var (gap, count) in gapCounts)
        {
            var rest = gap - ((gap - 1) % Emits + 1);
            long codes = 1;
            for (var i = Skips.Length - 1; i >= 0 && rest > 0; i--)
            {
                codes += rest / Skips[i];
                rest %= Skips[i];
            }
            total += count * codes;
        }
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
}
