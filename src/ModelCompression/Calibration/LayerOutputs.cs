namespace ModelCompression.Calibration;

/// <summary>
/// Layers' outputs captured batch by batch (rows × channels each) at the rows their input statistics use: the
/// reconstruction targets of a pass that refits layers after the ones before them changed. The only capture kept
/// for the whole data set: rows (already on the sub-grid) × output channels per layer, far less than the patches.
/// </summary>
internal sealed class LayerOutputs(IReadOnlyList<int> channels)
{
    private readonly int[] _channels = channels.ToArray();
    public IReadOnlyList<int> Channels => _channels;
    public List<float[]>[] Batches { get; } = channels.Select(_ => new List<float[]>()).ToArray();
    /// <summary>Position in <see cref="Channels"/>/<see cref="Batches"/> by layer output name.</summary>
    public Dictionary<string, int> Index { get; } = new(StringComparer.Ordinal);

    /// <summary>Drops the channels of a layer's target that structured pruning removed from its output.</summary>
    public void KeepChannels(string layerOutput, int[] kept)
    {
        if (!Index.TryGetValue(layerOutput, out var k)) return;
        var channels = Channels[k];
        for (var b = 0; b < Batches[k].Count; b++)
        {
            var old = Batches[k][b];
            var rows = old.Length / channels;
            var narrowed = new float[rows * kept.Length];
            for (var r = 0; r < rows; r++)
                for (var j = 0; j < kept.Length; j++) narrowed[r * kept.Length + j] = old[r * channels + kept[j]];
            Batches[k][b] = narrowed;
        }
        _channels[k] = kept.Length;
    }
}
