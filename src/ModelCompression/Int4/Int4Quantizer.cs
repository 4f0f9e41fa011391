using ModelCompression.Numerics;

namespace ModelCompression.Int4;

/// <summary>
/// A [rows = outputs, cols = inputs] weight in 4-bit blocks: <see cref="Codes"/> 0..15 per weight, and per row and
/// block of <see cref="BlockSize"/> consecutive inputs a scale and a zero point (8 when symmetric); the weight is
/// (code − zero point)·scale, as both MatMulNBits and a blocked DequantizeLinear define it.
/// </summary>
internal sealed record Int4Weights(int Rows, int Cols, int BlockSize, bool Symmetric, byte[] Codes, float[] Scales, byte[] ZeroPoints)
{
    public int Blocks => (Cols + BlockSize - 1) / BlockSize;

    public float[] Dequantize()
    {
        var w = new float[Rows * Cols];
        for (var r = 0; r < Rows; r++)
            for (var c = 0; c < Cols; c++)
            {
                var b = r * Blocks + c / BlockSize;
                w[r * Cols + c] = (Codes[r * Cols + c] - ZeroPoints[b]) * Scales[b];
            }
        return w;
    }
}

/// <summary>
/// 4-bit block quantization of one layer: round to nearest (RTN), or GPTQ (Frantar et al., 2023), which quantizes
/// the columns (inputs) in order and, through U, the upper Cholesky factor of the dampened inverse input Hessian
/// H = XᵀX, spreads each column's rounding error over the columns not yet quantized — the Optimal Brain Surgeon
/// update SparseGPT uses for pruning — with lazy batch updates. Each block's scale is chosen when its first column
/// is reached, from the block's weights as the compensation has left them (the paper's grouping).
/// </summary>
internal static class Int4Quantizer
{
    /// <summary>Columns per lazy batch update (the paper's 128; at least one quantization block).</summary>
    private const int LazyBatch = 128;

    public static Int4Weights Rtn(float[] w, int rows, int cols, int blockSize, bool symmetric) => RtnWithError(w, rows, cols, blockSize, symmetric).Weights;

    /// <summary>Rows per unit of parallel work: fixed, so the error sums add up in one order whatever the core count.</summary>
    private const int ChunkRows = 16;

    /// <summary>
    /// Round to nearest, row by row (rows in parallel, in fixed chunks), with ‖W − Ŵ‖/‖W‖ computed on the way: no
    /// double copy of W and no dequantized copy. Same codes, scales and zero points as choosing each block from W
    /// and rounding each weight to its block's grid.
    /// </summary>
    public static (Int4Weights Weights, double RelativeError) RtnWithError(ReadOnlySpan<float> w, int rows, int cols, int blockSize, bool symmetric)
    {
        if (w.Length != (long)rows * cols) throw new ArgumentException($"{w.Length} values for [{rows}, {cols}]");
        var q = Empty(rows, cols, blockSize, symmetric);
        var chunks = (rows + ChunkRows - 1) / ChunkRows;
        var sums = new (double Error, double Norm)[chunks];
        unsafe
        {
            fixed (float* source = w)
            {
                var src = (nint)source;
                Parallel.For(0, chunks, chunk =>
                {
                    double error = 0, norm = 0;
                    Span<double> x4 = stackalloc double[System.Numerics.Vector<double>.Count];
                    Span<long> c4 = stackalloc long[System.Numerics.Vector<double>.Count];
                    for (var r = chunk * ChunkRows; r < Math.Min(rows, (chunk + 1) * ChunkRows); r++)
                    {
                        var row = new ReadOnlySpan<float>((float*)src + (long)r * cols, cols);
                        for (var c0 = 0; c0 < cols; c0 += blockSize)
                        {
                            var block = row.Slice(c0, Math.Min(blockSize, cols - c0));
                            var (scale, zero) = BlockGrid(block, symmetric);
                            var b = r * q.Blocks + c0 / blockSize;
                            q.Scales[b] = scale;
                            q.ZeroPoints[b] = zero;
                            var codes = q.Codes.AsSpan(r * cols + c0, block.Length);
                            var k = 0;
                            if (scale != 0)
                            {
                                // Four (or more) weights at once, in double like the scalar rule below.
                                var width = System.Numerics.Vector<double>.Count;
                                var (s, z) = (new System.Numerics.Vector<double>(scale), new System.Numerics.Vector<double>(zero));
                                var (top, e2, n2) = (new System.Numerics.Vector<double>(15), System.Numerics.Vector<double>.Zero, System.Numerics.Vector<double>.Zero);
                                for (; k <= block.Length - width; k += width)
                                {
                                    for (var j = 0; j < width; j++) x4[j] = block[k + j];
                                    var x = new System.Numerics.Vector<double>(x4);
                                    var code = System.Numerics.Vector.Min(System.Numerics.Vector.Max(System.Numerics.Vector.Round(x / s) + z, System.Numerics.Vector<double>.Zero), top);
                                    var d = x - (code - z) * s;
                                    e2 += d * d;
                                    n2 += x * x;
                                    System.Numerics.Vector.ConvertToInt64(code).CopyTo(c4);
                                    for (var j = 0; j < width; j++) codes[k + j] = (byte)c4[j];
                                }
                                error += System.Numerics.Vector.Sum(e2);
                                norm += System.Numerics.Vector.Sum(n2);
                            }
                            for (; k < block.Length; k++)
                            {
                                double x = block[k];
                                var code = scale == 0 ? zero : (byte)Math.Clamp(Math.Round(x / scale, MidpointRounding.ToEven) + zero, 0, 15);
                                codes[k] = code;
                                // The dequantized value in float, as Dequantize() stores it.
                                double d = block[k] - (code - zero) * scale;
                                error += d * d;
                                norm += x * x;
                            }
                        }
                    }
                    sums[chunk] = (error, norm);
                });
            }
        }
        double num = 0, den = 0;
        foreach (var (e, n) in sums) { num += e; den += n; }
        return (q, den > 0 ? Math.Sqrt(num / den) : 0);
    }

    /// <summary>The GPTQ quantization and the dampening it used; null when H stays singular even with 10⁵ times the dampening.</summary>
    public static (Int4Weights Weights, double Damping)? Gptq(float[] weights, int rows, int cols, double[] hessian, int blockSize, bool symmetric, double damping)
    {
        var w = Array.ConvertAll(weights, x => (double)x);
        var h = (double[])hessian.Clone();
        var mean = 0.0;
        for (var i = 0; i < cols; i++)
        {
            // An input that is zero on every calibration sample has no curvature: its weights cannot matter.
            if (h[i * cols + i] == 0)
            {
                h[i * cols + i] = 1;
                for (var r = 0; r < rows; r++) w[r * cols + i] = 0;
            }
            mean += h[i * cols + i];
        }
        mean /= cols;
        double[]? u = null;
        var damp = damping;
        for (var attempt = 0; u is null && attempt < 6; attempt++, damp *= 10)
        {
            var damped = (double[])h.Clone();
            for (var i = 0; i < cols; i++) damped[i * cols + i] += damp * mean;
            u = DenseMath.InverseCholeskyUpper(damped, cols);
        }
        if (u is null) return null;
        damp /= 10;

        var q = Empty(rows, cols, blockSize, symmetric);
        var batch = Math.Max(LazyBatch, blockSize); // a multiple of the block size: a block's columns are all current when it is chosen
        var errors = new double[rows * batch];
        for (var i1 = 0; i1 < cols; i1 += batch)
        {
            var i2 = Math.Min(i1 + batch, cols);
            for (var col = i1; col < i2; col++)
            {
                if (col % blockSize == 0) ChooseBlock(q, w, col);
                var d = u[col * cols + col];
                var uRow = u.AsSpan(col * cols + col + 1, i2 - col - 1);
                for (var r = 0; r < rows; r++)
                {
                    var x = w[r * cols + col];
                    var err = (x - Quantize(q, r, col, x)) / d;
                    errors[r * batch + col - i1] = err;
                    DenseMath.Axpy(-err, uRow, w.AsSpan(r * cols + col + 1, i2 - col - 1));
                }
            }
            if (i2 == cols) continue;
            for (var r = 0; r < rows; r++)
            {
                var rest = w.AsSpan(r * cols + i2, cols - i2);
                for (var c = i1; c < i2; c++)
                {
                    var err = errors[r * batch + c - i1];
                    if (err != 0) DenseMath.Axpy(-err, u.AsSpan(c * cols + i2, cols - i2), rest);
                }
            }
        }
        return (q, damp);
    }

    /// <summary>‖(W − Ŵ)X‖ / ‖WX‖ from H = XᵀX alone: the layer's relative output error on the calibration inputs.</summary>
    public static double OutputError(float[] w, float[] quantized, int rows, int cols, double[] hessian)
    {
        double num = 0, den = 0;
        var d = new double[cols];
        var x = new double[cols];
        for (var r = 0; r < rows; r++)
        {
            for (var c = 0; c < cols; c++) { x[c] = w[r * cols + c]; d[c] = x[c] - quantized[r * cols + c]; }
            for (var i = 0; i < cols; i++)
            {
                var hi = hessian.AsSpan(i * cols, cols);
                if (d[i] != 0) num += d[i] * DenseMath.Dot(hi, d);
                if (x[i] != 0) den += x[i] * DenseMath.Dot(hi, x);
            }
        }
        return den > 0 ? Math.Sqrt(Math.Max(0, num) / den) : 0;
    }

    private static Int4Weights Empty(int rows, int cols, int blockSize, bool symmetric)
    {
        var blocks = (cols + blockSize - 1) / blockSize;
        return new Int4Weights(rows, cols, blockSize, symmetric, new byte[rows * cols], new float[rows * blocks], new byte[rows * blocks]);
    }

    /// <summary>
    /// Scale and zero point of every row's block starting at column <paramref name="c0"/>, from the values there now.
    /// Asymmetric: [min(x, 0), max(x, 0)] onto 0..15 (zero exactly representable). Symmetric: the value of largest
    /// magnitude onto code 0 (−8·scale), as ONNX Runtime's quantizer does, so one side keeps all 8 steps.
    /// </summary>
    private static void ChooseBlock(Int4Weights q, double[] w, int c0)
    {
        var c1 = Math.Min(c0 + q.BlockSize, q.Cols);
        var b = c0 / q.BlockSize;
        for (var r = 0; r < q.Rows; r++)
        {
            var (scale, zero) = BlockGrid<double>(w.AsSpan(r * q.Cols + c0, c1 - c0), q.Symmetric);
            q.Scales[r * q.Blocks + b] = scale;
            q.ZeroPoints[r * q.Blocks + b] = zero;
        }
    }

    /// <summary>The scale and zero point of one block of one row (see <see cref="ChooseBlock"/>).</summary>
    private static (float Scale, byte Zero) BlockGrid<T>(ReadOnlySpan<T> row, bool symmetric) where T : System.Numerics.INumberBase<T>
    {
        if (symmetric)
        {
            var extreme = 0.0;
            foreach (var v in row)
            {
                var x = double.CreateTruncating(v);
                if (Math.Abs(x) > Math.Abs(extreme)) extreme = x;
            }
            return ((float)(extreme / -8), 8);
        }
        double lo = 0, hi = 0;
        foreach (var v in row)
        {
            var x = double.CreateTruncating(v);
            lo = Math.Min(lo, x);
            hi = Math.Max(hi, x);
        }
        var scale = (float)((hi - lo) / 15);
        return (scale, scale == 0 ? (byte)8 : (byte)Math.Clamp(Math.Round(-lo / scale, MidpointRounding.ToEven), 0, 15));
    }

    /// <summary>Stores the code of one weight and returns the value it stands for.</summary>
    private static double Quantize(Int4Weights q, int r, int c, double x)
    {
        var b = r * q.Blocks + c / q.BlockSize;
        var scale = q.Scales[b];
        var zero = q.ZeroPoints[b];
        var code = scale == 0 ? zero : (byte)Math.Clamp(Math.Round(x / scale, MidpointRounding.ToEven) + zero, 0, 15);
        q.Codes[r * q.Cols + c] = code;
        return (code - zero) * (double)scale;
    }
}
