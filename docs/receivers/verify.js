// Verify a crohooks delivery with Node.js's built-in crypto module, either way:
//
//   node verify.js cro SECRET SIGNATURE < body
//   node verify.js standard SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE < body
//
// SECRET is the hook's secret exactly as crohooks returns it. SIGNATURE is the value of
// X-Cro-Signature-256 ("sha256=<hex>") or X-Cro-Signature ("sha1=<hex>"); the other
// arguments are the values of the webhook-id, webhook-timestamp and webhook-signature
// headers. The body is the raw request body, byte for byte: verify before parsing it.
// Exits 0 if the delivery is valid, 1 if it is not.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");

const TOLERANCE_SECONDS = 5 * 60;

function splitOnce(text, separator) {
  const at = text.indexOf(separator);
  return at < 0 ? [text, ""] : [text.slice(0, at), text.slice(at + separator.length)];
}

// timingSafeEqual takes as long whether or not the values match, so a forger can't
// learn a signature one byte at a time; it throws on different lengths, hence the check.
function sameBytes(a, b) {
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

// GitHub-style: HMAC of the body keyed with the secret's UTF-8 bytes.
function verifyCroSignature(secret, body, signature) {
  const [algorithm, hex] = splitOnce(signature.trim(), "=");
  if (algorithm !== "sha256" && algorithm !== "sha1") return false;
  if (!/^[0-9a-f]+$/i.test(hex)) return false;
  const expected = crypto.createHmac(algorithm, Buffer.from(secret, "utf8")).update(body).digest();
  return sameBytes(Buffer.from(hex, "hex"), expected);
}

// Standard Webhooks: HMAC-SHA256 of "{id}.{timestamp}.{body}" keyed with the
// base64-decoded secret; the header lists one "v1,<base64>" per live secret.
function verifyStandardWebhook(secret, body, id, timestamp, signatures, nowSeconds) {
  if (!/^[0-9]+$/.test(timestamp)) return false;
  const now = nowSeconds ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - Number(timestamp)) > TOLERANCE_SECONDS) return false;
  const key = Buffer.from(secret, "base64");
  const signedContent = Buffer.concat([Buffer.from(`${id}.${timestamp}.`, "utf8"), body]);
  const expected = crypto.createHmac("sha256", key).update(signedContent).digest();
  return signatures.split(" ").some((entry) => {
    const [version, signature] = splitOnce(entry, ",");
    return version === "v1" && sameBytes(Buffer.from(signature, "base64"), expected);
  });
}

function main(args) {
  const body = fs.readFileSync(0);
  if (args[0] === "cro" && args.length === 3) {
    return verifyCroSignature(args[1], body, args[2]) ? 0 : 1;
  }
  if (args[0] === "standard" && args.length === 5) {
    return verifyStandardWebhook(args[1], body, args[2], args[3], args[4]) ? 0 : 1;
  }
  process.stderr.write("usage: node verify.js cro SECRET SIGNATURE < body\n" +
    "       node verify.js standard SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE < body\n");
  return 2;
}

module.exports = { verifyCroSignature, verifyStandardWebhook };

if (require.main === module) {
  process.exitCode = main(process.argv.slice(2));
}
