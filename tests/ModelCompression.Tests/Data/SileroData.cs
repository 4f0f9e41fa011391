namespace ModelCompression.Tests.Data;

/// <summary>
/// Generated inputs for Silero VAD v4 as its .npz data holds them: <c>input</c> [n, 1536] (tones in noise, half of
/// the chunks near-silent), <c>sr</c> an int64 scalar, <c>h</c>/<c>c</c> [2, n, 64] (a different state per sample, so
/// slicing the state along the wrong axis shows).
/// </summary>
internal sealed record SileroData(int Samples, float[] Input, float[] H, float[] C)
{
    public const int Chunk = 1536, Layers = 2, State = 64;

    public static SileroData Generate(int samples, int seed = 7)
    {
        var random = new Random(seed);
        var input = new float[samples * Chunk];
        for (var s = 0; s < samples; s++)
        {
            var amplitude = s % 2 == 0 ? 0.5 : 0.002;
            var frequency = 150 + 40 * s;
            for (var t = 0; t < Chunk; t++)
                input[s * Chunk + t] = (float)(amplitude * Math.Sin(2 * Math.PI * frequency * t / 16000.0) + 0.01 * (random.NextDouble() - 0.5));
        }
        float[] State() => Enumerable.Range(0, Layers * samples * SileroData.State).Select(_ => (float)(0.4 * (random.NextDouble() - 0.5))).ToArray();
        return new SileroData(samples, input, State(), State());
    }

    /// <summary>Sample <paramref name="s"/>'s state [2, 1, 64] cut by hand from [2, n, 64].</summary>
    public float[] StateOf(float[] state, int s) =>
        Enumerable.Range(0, Layers).SelectMany(l => state.AsSpan((l * Samples + s) * SileroData.State, SileroData.State).ToArray()).ToArray();

    public NpzArray[] Arrays(long sampleRate = 16000, int? hSamples = null)
    {
        var n = hSamples ?? Samples;
        return
        [
            Npz.Floats("input", [Samples, Chunk], Input),
            Npz.Int64Scalar("sr", sampleRate),
            Npz.Floats("h", [Layers, n, State], H[..(Layers * n * State)]),
            Npz.Floats("c", [Layers, Samples, State], C),
        ];
    }

    public string Write(string path, long sampleRate = 16000, int? hSamples = null) => Npz.Write(path, Arrays(sampleRate, hSamples));
}
