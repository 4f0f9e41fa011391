using System.Numerics;
using System.Runtime.InteropServices;
using ModelCompression.Numerics;

namespace ModelCompression.Int4;

/// <summary>
/// A [rows = outputs, cols = inputs] weight in 4-bit blocks: codes 0..15 per weight, and per row and block of
/// <see cref="BlockSize"/> consecutive inputs a scale and a zero point (8 when symmetric); the weight is
/// (code − zero point)·scale, as both MatMulNBits and a blocked DequantizeLinear define it. The codes are either
/// <see cref="Codes"/>, a byte per weight, or <see cref="Packed"/>, already in MatMulNBits' B layout.
/// </summary>
internal sealed record Int4Weights(int Rows, int Cols, int BlockSize, bool Symmetric, byte[]? Codes, float[] Scales, byte[] ZeroPoints)
{
    public int Blocks => (Cols + BlockSize - 1) / BlockSize;

    /// <summary>
    /// MatMulNBits' B, [rows, blocks, block/2]: two codes a byte, the first in the low nibble, a last partial block
    /// padded with its zero point. Round to nearest writes this; GPTQ, which rounds a column at a time, <see cref="Codes"/>.
    /// </summary>
    public byte[]? Packed { get; init; }

    /// <summary>A byte per code, [rows, cols].</summary>
    public byte[] UnpackedCodes()
    {
        if (Codes is not null) return Codes;
        var codes = new byte[Rows * Cols];
        for (var r = 0; r < Rows; r++)
            for (var j = 0; j < Blocks; j++)
            {
                var source = Packed!.AsSpan((r * Blocks + j) * (BlockSize / 2), BlockSize / 2);
                for (int c = j * BlockSize, end = Math.Min(Cols, c + BlockSize), p = 0; c < end; c++, p = c % BlockSize / 2)
                    codes[r * Cols + c] = (byte)(c % 2 == 0 ? source[p] & 0x0F : source[p] >> 4);
            }
        return codes;
    }

    public float[] Dequantize()
    {
        var codes = UnpackedCodes();
        var w = new float[Rows * Cols];
        for (var r = 0; r < Rows; r++)
            for (var c = 0; c < Cols; c++)
            {
                var b = r * Blocks + c / BlockSize;
                w[r * Cols + c] = (codes[r * Cols + c] - ZeroPoints[b]) * Scales[b];
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
    /// (in double) and rounding each weight to its block's grid (<see cref="VectorCodes"/>); the codes are written
    /// packed, in MatMulNBits' layout (<see cref="Int4Weights.Packed"/>).
    /// </summary>
    public static (Int4Weights Weights, double RelativeError) RtnWithError(ReadOnlySpan<float> w, int rows, int cols, int blockSize, bool symmetric)
    {
        if (w.Length != (long)rows * cols) throw new ArgumentException($"{w.Length} values for [{rows}, {cols}]");
        var blocks = (cols + blockSize - 1) / blockSize;
        var q = new Int4Weights(rows, cols, blockSize, symmetric, null, new float[rows * blocks], new byte[rows * blocks]) { Packed = new byte[(long)rows * blocks * (blockSize / 2)] };
        var chunks = (rows + ChunkRows - 1) / ChunkRows;
        var sums = new (double Error, double Norm)[chunks];
        unsafe
        {
            fixed (float* source = w)
            fixed (byte* packed = q.Packed)
            {
                var (src, dst) = ((nint)source, (nint)packed);
                Parallel.For(0, chunks, chunk =>
                {
                    var (error, norm) = (0.0, 0.0);
                    for (var r = chunk * ChunkRows; r < Math.Min(rows, (chunk + 1) * ChunkRows); r++)
                    {
                        var (e, n) = RtnRow((float*)src + (long)r * cols, (byte*)dst, q, r);
                        error += e;
                        norm += n;
                    }
                    sums[chunk] = (error, norm);
                });
            }
        }
        double num = 0, den = 0;
        foreach (var (e, n) in sums) { num += e; den += n; }
        return (q, den > 0 ? Math.Sqrt(num / den) : 0);
    }

    /// <summary>One [out, in] row: each block's grid, codes and packed bytes (a last partial block padded with its zero point).</summary>
    private static unsafe (double Error, double Norm) RtnRow(float* row, byte* packed, Int4Weights q, int r)
    {
        int cols = q.Cols, bs = q.BlockSize, half = bs / 2, fw = Vector<float>.Count;
        Span<float> codes = stackalloc float[bs];
        var (e2, n2) = (Vector<double>.Zero, Vector<double>.Zero);
        double error = 0, norm = 0;
        for (var j = 0; j < q.Blocks; j++)
        {
            var block = row + j * bs;
            var length = Math.Min(bs, cols - j * bs);
            var vectorEnd = length - length % fw;
            var (scale, zero) = q.Symmetric ? SymmetricGrid(Extreme(block, length)) : AsymmetricGrid(Range(block, length));
            q.Scales[r * q.Blocks + j] = scale;
            q.ZeroPoints[r * q.Blocks + j] = zero;
            var (s, z) = (new Vector<float>(scale), new Vector<float>((float)zero));
            var i = 0;
            for (; i < vectorEnd; i += fw)
            {
                var x = Vector.Load(block + i);
                var c = VectorCodes(x, s, z);
                // Error in float (the dequantized value as Dequantize stores it), summed in double.
                var d = x - (c - z) * s;
                Vector.Widen(d * d, out var el, out var eh);
                Vector.Widen(x * x, out var nl, out var nh);
                e2 += el + eh;
                n2 += nl + nh;
                c.CopyTo(codes[i..]);
            }
            for (; i < length; i++)
            {
                float x = block[i], c = ScalarCode(x, scale, zero), d = x - (c - zero) * scale;
                error += d * d;
                norm += x * x;
                codes[i] = c;
            }
            codes[length..].Fill(zero);
            var target = packed + ((long)r * q.Blocks + j) * half;
            for (var p = 0; p < half; p++) target[p] = (byte)(codes[2 * p] + 16 * codes[2 * p + 1]);
        }
        return (error + Vector.Sum(e2), norm + Vector.Sum(n2));
    }

    /// <summary>The first value of largest magnitude (+0 when all are zero), as the scalar scan in order finds it.</summary>
    private static unsafe float Extreme(float* block, int length)
    {
        int i = 0, fw = Vector<float>.Count;
        var max = Vector<float>.Zero;
        for (; i <= length - fw; i += fw) max = Vector.Max(max, Vector.Abs(Vector.Load(block + i)));
        var largest = 0f;
        for (var k = 0; k < fw; k++) largest = Math.Max(largest, max[k]);
        for (; i < length; i++) largest = Math.Max(largest, Math.Abs(block[i]));
        if (largest == 0) return 0;
        for (i = 0; Math.Abs(block[i]) != largest; i++) { }
        return block[i];
    }

    /// <summary>min(x, 0) and max(x, 0) of a block.</summary>
    private static unsafe (double Lo, double Hi) Range(float* block, int length)
    {
        int i = 0, fw = Vector<float>.Count;
        var (lo, hi) = (Vector<float>.Zero, Vector<float>.Zero);
        for (; i <= length - fw; i += fw)
        {
            var x = Vector.Load(block + i);
            (lo, hi) = (Vector.Min(lo, x), Vector.Max(hi, x));
        }
        float min = 0, max = 0;
        for (var k = 0; k < fw; k++) (min, max) = (Math.Min(min, lo[k]), Math.Max(max, hi[k]));
        for (; i < length; i++) (min, max) = (Math.Min(min, block[i]), Math.Max(max, block[i]));
        return (min, max);
    }

    /// <summary>Output columns per unit of parallel work in the [in, out] sweep (a multiple of any vector width).</summary>
    private const int ChunkColumns = 256;

    /// <summary>
    /// <see cref="RtnWithError"/> for a weight stored [in, out] (MatMul's layout), with the codes written straight
    /// into MatMulNBits' packed layout (<see cref="Int4Weights.Packed"/>). A block runs along the input axis, so it
    /// is <paramref name="blockSize"/> consecutive stored rows, and each unit of work (one block of rows × a fixed
    /// chunk of columns) sweeps those rows with vectors across the columns: no transposed copy. The codes, scales
    /// and zero points are the row-major path's (<see cref="VectorCodes"/>); only the error sums add up in another order.
    /// </summary>
    public static (Int4Weights Weights, double RelativeError) RtnInOut(ReadOnlySpan<float> inOut, int rows, int cols, int blockSize, bool symmetric)
    {
        if (inOut.Length != (long)rows * cols) throw new ArgumentException($"{inOut.Length} values for [{cols}, {rows}]");
        var blocks = (cols + blockSize - 1) / blockSize;
        var q = new Int4Weights(rows, cols, blockSize, symmetric, null, new float[rows * blocks], new byte[rows * blocks]) { Packed = new byte[(long)rows * blocks * (blockSize / 2)] };
        var tiles = (rows + ChunkColumns - 1) / ChunkColumns;
        var sums = new (double Error, double Norm)[blocks * tiles];
        unsafe
        {
            fixed (float* source = inOut)
            fixed (byte* packed = q.Packed)
            {
                var (src, dst) = ((nint)source, (nint)packed);
                Parallel.For(0, sums.Length, unit => sums[unit] = RtnInOutUnit((float*)src, (byte*)dst, q, unit / tiles, unit % tiles * ChunkColumns));
            }
        }
        double num = 0, den = 0;
        foreach (var (e, n) in sums) { num += e; den += n; }
        return (q, den > 0 ? Math.Sqrt(num / den) : 0);
    }

    /// <summary>
    /// Round-to-nearest codes of x/scale computed in float, exactly the double rule's: float division is correctly
    /// rounded and monotonic, so x/scale and its float lie on the same side of every n + ½ unless the float lands on
    /// one; those lanes (true ties, or rounded onto one) take the double rule. Zero scales (all-zero blocks) take the
    /// zero point.
    /// </summary>
    private static Vector<float> VectorCodes(Vector<float> x, Vector<float> scale, Vector<float> zero)
    {
        var quotient = x / scale;
        var rounded = Vector.Round(quotient);
        var code = Vector.ConditionalSelect(Vector.Equals(scale, Vector<float>.Zero), zero, Vector.Min(Vector.Max(rounded + zero, Vector<float>.Zero), new Vector<float>(15)));
        if (Vector.EqualsAny(Vector.Abs(quotient - rounded), new Vector<float>(0.5f)))
        {
            Span<float> exact = stackalloc float[Vector<float>.Count];
            for (var j = 0; j < exact.Length; j++) exact[j] = ScalarCode(x[j], scale[j], zero[j]);
            code = new Vector<float>(exact);
        }
        return code;
    }

    /// <summary>The scalar rule, in double.</summary>
    private static float ScalarCode(double x, double scale, double zero) => scale == 0 ? (float)zero : (float)Math.Clamp(Math.Round(x / scale, MidpointRounding.ToEven) + zero, 0, 15);

    /// <summary>One block (stored rows k0..k1) × columns n0..n0+ChunkColumns of an [in, out] weight.</summary>
    private static unsafe (double Error, double Norm) RtnInOutUnit(float* src, byte* packed, Int4Weights q, int block, int n0)
    {
        int rows = q.Rows, cols = q.Cols, k0 = block * q.BlockSize, k1 = Math.Min(cols, k0 + q.BlockSize), half = q.BlockSize / 2;
        var width = Math.Min(ChunkColumns, rows - n0);
        var fw = Vector<float>.Count;
        var vectorEnd = width - width % fw;
        // lo/hi: the block's min(x, 0) and max(x, 0) per column; symmetric: lo is the first value of largest magnitude.
        Span<float> lo = stackalloc float[ChunkColumns], hi = stackalloc float[ChunkColumns];
        lo.Clear();
        hi.Clear();
        for (var k = k0; k < k1; k++)
        {
            var row = src + (long)k * rows + n0;
            var i = 0;
            if (q.Symmetric)
            {
                for (; i < vectorEnd; i += fw)
                {
                    var (x, e) = (Vector.Load(row + i), new Vector<float>(lo[i..]));
                    Vector.ConditionalSelect(Vector.GreaterThan(Vector.Abs(x), Vector.Abs(e)), x, e).CopyTo(lo[i..]);
                }
                for (; i < width; i++) if (Math.Abs(row[i]) > Math.Abs(lo[i])) lo[i] = row[i];
            }
            else
            {
                for (; i < vectorEnd; i += fw)
                {
                    var x = Vector.Load(row + i);
                    Vector.Min(new Vector<float>(lo[i..]), x).CopyTo(lo[i..]);
                    Vector.Max(new Vector<float>(hi[i..]), x).CopyTo(hi[i..]);
                }
                for (; i < width; i++) { lo[i] = Math.Min(lo[i], row[i]); hi[i] = Math.Max(hi[i], row[i]); }
            }
        }
        // The grid in double, per column, as the row-major path; kept as floats (exact: a float scale, a small zero point).
        Span<float> scales = hi, zeros = lo;
        for (var i = 0; i < width; i++)
        {
            var (scale, zero) = q.Symmetric ? SymmetricGrid(lo[i]) : AsymmetricGrid(lo[i], hi[i]);
            var b = (n0 + i) * q.Blocks + block;
            q.Scales[b] = scale;
            q.ZeroPoints[b] = zero;
            (scales[i], zeros[i]) = (scale, zero);
        }
        // Two stored rows make one byte per column (low nibble first; rows past the weight's end are the zero point),
        // gathered [pair, column] here and written out per column at the end: MatMulNBits' [column, block, pair].
        Span<byte> pairs = stackalloc byte[half * ChunkColumns];
        var (e2, n2) = (Vector<double>.Zero, Vector<double>.Zero);
        double error = 0, norm = 0;
        for (var p = 0; p < half; p++)
        {
            int ka = k0 + 2 * p, kb = ka + 1;
            float* a = src + (long)ka * rows + n0, b = src + (long)kb * rows + n0;
            var i = 0;
            for (; i < vectorEnd; i += fw)
            {
                var (s, z) = (new Vector<float>(scales[i..]), new Vector<float>(zeros[i..]));
                Vector<float> xa = Vector<float>.Zero, xb = Vector<float>.Zero, ca = z, cb = z;
                if (ka < k1) ca = VectorCodes(xa = Vector.Load(a + i), s, z);
                if (kb < k1) cb = VectorCodes(xb = Vector.Load(b + i), s, z);
                // Error in float per pair (the dequantized value as Dequantize stores it), summed in double.
                var (da, db) = (xa - (ca - z) * s, xb - (cb - z) * s);
                Vector.Widen(da * da + db * db, out var el, out var eh);
                Vector.Widen(xa * xa + xb * xb, out var nl, out var nh);
                e2 += el + eh;
                n2 += nl + nh;
                var packedPair = Vector.AsVectorUInt32(Vector.ConvertToInt32(ca + cb * new Vector<float>(16)));
                var bytes = Vector.Narrow(Vector.Narrow(packedPair, packedPair), Vector.Narrow(packedPair, packedPair));
                for (var j = 0; j < fw; j += sizeof(ulong)) MemoryMarshal.Write(pairs[(p * ChunkColumns + i + j)..], Vector.AsVectorUInt64(bytes)[j / sizeof(ulong)]);
            }
            for (; i < width; i++)
            {
                var (s, z) = (scales[i], zeros[i]);
                float xa = ka < k1 ? a[i] : 0, xb = kb < k1 ? b[i] : 0;
                var ca = ka < k1 ? ScalarCode(xa, s, z) : z;
                var cb = kb < k1 ? ScalarCode(xb, s, z) : z;
                float da = xa - (ca - z) * s, db = xb - (cb - z) * s;
                error += da * da + db * db;
                norm += xa * xa + xb * xb;
                pairs[p * ChunkColumns + i] = (byte)(ca + 16 * cb);
            }
        }
        for (var i = 0; i < width; i++)
        {
            var column = packed + ((long)(n0 + i) * q.Blocks + block) * half;
            for (var p = 0; p < half; p++) column[p] = pairs[p * ChunkColumns + i];
        }
        return (error + Vector.Sum(e2), norm + Vector.Sum(n2));
    }

    /// <summary>The GPTQ quantization and the dampening it used; null when H stays singular even with 10⁵ times the dampening.</summary>
    /// <param name="hessian">XᵀX, cols × cols, rows <paramref name="stride"/> apart (default cols): the leading block of larger statistics is read in place.</param>
    public static (Int4Weights Weights, double Damping)? Gptq(float[] weights, int rows, int cols, double[] hessian, int blockSize, bool symmetric, double damping, int stride = 0)
    {
        if (stride == 0) stride = cols;
        var w = Array.ConvertAll(weights, x => (double)x);
        // An input that is zero on every calibration sample has no curvature: its weights cannot matter.
        var dead = Enumerable.Range(0, cols).Where(i => hessian[(long)i * stride + i] == 0).ToList();
        foreach (var i in dead)
            for (var r = 0; r < rows; r++) w[r * cols + i] = 0;
        if (DenseMath.DampedInverseFactor(hessian, cols, stride, dead, damping) is not (var u, var damp, _)) return null;

        var q = Empty(rows, cols, blockSize, symmetric);
        var batch = Math.Max(LazyBatch, blockSize); // a multiple of the block size: a block's columns are all current when it is chosen
        var errors = new double[rows * batch];
        for (var i1 = 0; i1 < cols; i1 += batch)
        {
            var i2 = Math.Min(i1 + batch, cols);
            // Every row's grid choice, sweep and trailing update touch only that row: rows run in parallel, each in
            // the same order as alone (same bits on any core count).
            DenseMath.ForRows(rows, (long)(i2 - i1) * (cols - i1), r =>
            {
                var row = w.AsSpan(r * cols, cols);
                for (var col = i1; col < i2; col++)
                {
                    if (col % blockSize == 0) ChooseBlock(q, row, r, col);
                    var x = row[col];
                    var err = (x - Quantize(q, r, col, x)) / u[col * cols + col];
                    errors[r * batch + col - i1] = err;
                    DenseMath.Axpy(-err, u.AsSpan(col * cols + col + 1, i2 - col - 1), row.Slice(col + 1, i2 - col - 1));
                }
                if (i2 == cols) return;
                var rest = row[i2..];
                for (var c = i1; c < i2; c++)
                {
                    var err = errors[r * batch + c - i1];
                    if (err != 0) DenseMath.Axpy(-err, u.AsSpan(c * cols + i2, cols - i2), rest);
                }
            });
        }
        return (q, damp);
    }

    /// <summary>‖(W − Ŵ)X‖ / ‖WX‖ from H = XᵀX alone: the layer's relative output error on the calibration inputs.</summary>
    public static double OutputError(float[] w, float[] quantized, int rows, int cols, double[] hessian, int stride = 0) =>
        DenseMath.RelativeOutputError(w, quantized, rows, cols, hessian, stride);

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
    private static void ChooseBlock(Int4Weights q, ReadOnlySpan<double> row, int r, int c0)
    {
        var c1 = Math.Min(c0 + q.BlockSize, q.Cols);
        var b = c0 / q.BlockSize;
        var (scale, zero) = BlockGrid<double>(row[c0..c1], q.Symmetric);
        q.Scales[r * q.Blocks + b] = scale;
        q.ZeroPoints[r * q.Blocks + b] = zero;
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
            return SymmetricGrid(extreme);
        }
        double lo = 0, hi = 0;
        foreach (var v in row)
        {
            var x = double.CreateTruncating(v);
            lo = Math.Min(lo, x);
            hi = Math.Max(hi, x);
        }
        return AsymmetricGrid(lo, hi);
    }

    /// <summary>The symmetric grid of a block whose first value of largest magnitude is <paramref name="extreme"/>.</summary>
    private static (float Scale, byte Zero) SymmetricGrid(double extreme) => ((float)(extreme / -8), 8);

    /// <summary>The asymmetric grid of a block spanning [<paramref name="lo"/>, <paramref name="hi"/>] (both include 0).</summary>
    private static (float Scale, byte Zero) AsymmetricGrid((double Lo, double Hi) range) => AsymmetricGrid(range.Lo, range.Hi);

    private static (float Scale, byte Zero) AsymmetricGrid(double lo, double hi)
    {
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
        q.Codes![r * q.Cols + c] = code;
        return (code - zero) * (double)scale;
    }
}
