using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;

namespace ModelCompression.Graph;

/// <summary>
/// Layer merging: a BatchNormalization (inference mode) right after a Conv or Gemm whose output it alone consumes
/// becomes part of that layer: W' = W·γ/√(σ²+ε) per output channel, b' = (b − μ)·γ/√(σ²+ε) + β.
/// </summary>
public sealed class FoldBatchNormPass : ICompressionPass
{
    public string Name => "fold-batchnorm";
    public PassStage Stage => PassStage.Fold;
    public IReadOnlyList<OptionsGroup> Reads => [GraphOptions.Group];
    public bool IsRequested(CompressionPolicy policy) => policy.Get<GraphOptions>().FoldBatchNorm;

    public void Apply(CompressionContext context)
    {
        var graph = context.Graph;
        foreach (var bn in graph.Nodes.Where(n => n.OpType == "BatchNormalization").ToList())
        {
            if (bn.Output.Count > 1 && bn.Output.Skip(1).Any(o => o.Length > 0)) continue; // training outputs in use
            if (bn.Attribute.Any(a => a.Name == "training_mode" && a.I != 0)) continue;
            var producer = graph.Producer(bn.Input[0]);
            if (producer is null || !OpRegistry.Handles(producer, OpTechnique.FoldBatchNorm) || graph.Consumers(producer.Output[0]).Count != 1 || graph.IsGraphOutput(producer.Output[0])) continue;
            if (context.IsExcluded(producer)) continue;
            var layer = WeightedLayer.Find(graph, producer.OpType).FirstOrDefault(l => ReferenceEquals(l.Node, producer));
            var parameters = bn.Input.Skip(1).Select(graph.Initializer).ToList();
            if (layer is null || parameters.Any(p => p is null)) continue;
            var gamma = context.Model.ReadFloats(parameters[0]!);
            var beta = context.Model.ReadFloats(parameters[1]!);
            var mean = context.Model.ReadFloats(parameters[2]!);
            var variance = context.Model.ReadFloats(parameters[3]!);
            if (gamma.Length != layer.OutFeatures) continue; // BN over another axis than the layer's outputs
            var epsilon = bn.Attribute.FirstOrDefault(a => a.Name == "epsilon")?.F ?? 1e-5f;

            var w = layer.ReadMatrix(context.Model);
            var bias = layer.BiasName is { } b && graph.Initializer(b) is { } bt ? context.Model.ReadFloats(bt) : new float[layer.OutFeatures];
            for (var o = 0; o < layer.OutFeatures; o++)
            {
                var scale = gamma[o] / MathF.Sqrt(variance[o] + epsilon);
                for (var i = 0; i < layer.InFeatures; i++) w[o * layer.InFeatures + i] *= scale;
                bias[o] = (bias[o] - mean[o]) * scale + beta[o];
            }
            layer.WriteMatrix(w);
            var biasName = layer.BiasName is { } existing && graph.Consumers(existing).Count == 1 ? existing : graph.FreshName(producer.Name + "_folded_bias");
            graph.SetInitializer(Tensors.FromFloats(biasName, [layer.OutFeatures], bias));
            while (producer.Input.Count < 3) producer.Input.Add("");
            producer.Input[2] = biasName;
            graph.Bypass(bn);
            context.Record(new LayerRecord
            {
                Layer = layer.Name, Op = producer.OpType, Technique = "fold-batchnorm", Shape = layer.WeightShape, Rewritten = true,
                ParametersBefore = layer.Parameters + 4L * layer.OutFeatures, ParametersAfter = layer.Parameters + layer.OutFeatures,
                Note = $"folded {OnnxGraph.Describe(bn)}",
            });
        }
    }
}
