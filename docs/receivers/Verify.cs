// Verify a crohooks delivery in C# with System.Security.Cryptography (.NET 6 or later),
// either way:
//
//   dotnet run -- cro SECRET SIGNATURE < body
//   dotnet run -- standard SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE < body
//
// SECRET is the hook's secret exactly as crohooks returns it. SIGNATURE is the value of
// X-Cro-Signature-256 ("sha256=<hex>") or X-Cro-Signature ("sha1=<hex>"); the other
// arguments are the values of the webhook-id, webhook-timestamp and webhook-signature
// headers. The body is the raw request body, byte for byte: verify before parsing it.
// Exits 0 if the delivery is valid, 1 if it is not.
//
// In ASP.NET Core, read the body with Request.EnableBuffering() and copy Request.Body
// into a MemoryStream before any model binding touches it.

#nullable enable

using System;
using System.Globalization;
using System.IO;
using System.Security.Cryptography;
using System.Text;

public static class CrohooksSignature
{
    public const long ToleranceSeconds = 5 * 60;

    // GitHub-style: HMAC of the body keyed with the secret's UTF-8 bytes.
    public static bool VerifyCroSignature(string secret, byte[] body, string signature)
    {
        string[] parts = signature.Trim().Split('=', 2);
        if (parts.Length != 2)
        {
            return false;
        }
        byte[] key = Encoding.UTF8.GetBytes(secret);
        byte[]? expected = parts[0] switch
        {
            "sha256" => HMACSHA256.HashData(key, body),
            "sha1" => HMACSHA1.HashData(key, body),
            _ => null,
        };
        if (expected is null)
        {
            return false;
        }
        byte[] given;
        try
        {
            given = Convert.FromHexString(parts[1]);
        }
        catch (FormatException)
        {
            return false;
        }
        // FixedTimeEquals takes as long whether or not the values match (and is false for
        // different lengths), so a forger can't learn a signature one byte at a time.
        return CryptographicOperations.FixedTimeEquals(expected, given);
    }

    // Standard Webhooks: HMAC-SHA256 of "{id}.{timestamp}.{body}" keyed with the
    // base64-decoded secret; the header lists one "v1,<base64>" per live secret.
    public static bool VerifyStandardWebhook(
        string secret, byte[] body, string id, string timestamp, string signatures,
        DateTimeOffset now)
    {
        if (!long.TryParse(timestamp, NumberStyles.None, CultureInfo.InvariantCulture, out long sentAt))
        {
            return false;
        }
        if (Math.Abs(now.ToUnixTimeSeconds() - sentAt) > ToleranceSeconds)
        {
            return false;
        }
        byte[] key;
        try
        {
            key = Convert.FromBase64String(secret);
        }
        catch (FormatException)
        {
            return false;
        }
        byte[] prefix = Encoding.UTF8.GetBytes($"{id}.{timestamp}.");
        byte[] signedContent = new byte[prefix.Length + body.Length];
        Buffer.BlockCopy(prefix, 0, signedContent, 0, prefix.Length);
        Buffer.BlockCopy(body, 0, signedContent, prefix.Length, body.Length);
        byte[] expected = HMACSHA256.HashData(key, signedContent);

        foreach (string entry in signatures.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] parts = entry.Split(',', 2);
            if (parts.Length != 2 || parts[0] != "v1")
            {
                continue;
            }
            byte[] given;
            try
            {
                given = Convert.FromBase64String(parts[1]);
            }
            catch (FormatException)
            {
                continue;
            }
            if (CryptographicOperations.FixedTimeEquals(expected, given))
            {
                return true;
            }
        }
        return false;
    }
}

public static class Program
{
    public static int Main(string[] args)
    {
        byte[] body;
        using (Stream stdin = Console.OpenStandardInput())
        using (var buffer = new MemoryStream())
        {
            stdin.CopyTo(buffer);
            body = buffer.ToArray();
        }

        if (args.Length == 3 && args[0] == "cro")
        {
            return CrohooksSignature.VerifyCroSignature(args[1], body, args[2]) ? 0 : 1;
        }
        if (args.Length == 5 && args[0] == "standard")
        {
            bool valid = CrohooksSignature.VerifyStandardWebhook(
                args[1], body, args[2], args[3], args[4], DateTimeOffset.UtcNow);
            return valid ? 0 : 1;
        }
        Console.Error.WriteLine("usage: Verify cro SECRET SIGNATURE < body");
        Console.Error.WriteLine(
            "       Verify standard SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE < body");
        return 2;
    }
}
