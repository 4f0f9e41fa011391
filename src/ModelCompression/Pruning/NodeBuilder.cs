using Google.Protobuf;
using ModelCompression.Onnx.Protobuf;
using AttributeType = ModelCompression.Onnx.Protobuf.AttributeProto.Types.AttributeType;

namespace ModelCompression.Pruning;

/// <summary>Terse construction of the helper nodes the pruning passes add (statistics probes, storage decoders).</summary>
internal static class NodeBuilder
{
    public static NodeProto Node(string opType, IEnumerable<string> inputs, string output, params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = opType };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        node.Attribute.AddRange(attributes);
        return node;
    }

    public static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeType.Int, I = value };

    public static AttributeProto Ints(string name, params long[] values)
    {
        var attribute = new AttributeProto { Name = name, Type = AttributeType.Ints };
        attribute.Ints.AddRange(values);
        return attribute;
    }

    public static AttributeProto String(string name, string value) => new() { Name = name, Type = AttributeType.String, S = ByteString.CopyFromUtf8(value) };

    public static AttributeProto Tensor(string name, TensorProto value) => new() { Name = name, Type = AttributeType.Tensor, T = value };
}
