namespace ModelCompression.Onnx;

/// <summary>
/// The one exception the ONNX layer throws for malformed input: a truncated or non-ONNX file, bad external data,
/// a cycle, a value used before it is produced, tensor bytes that do not match their shape. The message names
/// what is wrong and where.
/// </summary>
public sealed class OnnxFormatException : Exception
{
    public OnnxFormatException(string message) : base(message) { }
    public OnnxFormatException(string message, Exception inner) : base(message, inner) { }
}
