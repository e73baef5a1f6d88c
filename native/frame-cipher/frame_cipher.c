/*
 * frame_cipher: AES-256-GCM for tunnel frames with one OpenSSL context per key, re-used for
 * every frame with only its nonce set again (docs/PROTOCOL.md, "Where the time goes").
 *
 * Why native code: node:crypto makes a new cipher object per nonce (createCipheriv), and with
 * it a new EVP context: a provider fetch, the AES key schedule and the GHASH table, 3-8 us per
 * frame, more than sealing a small frame costs. Node offers no way to set a new nonce on an
 * existing context, and no maintained npm package exposes AES-GCM with a re-usable context
 * (sodium-native has no AES-GCM; @noble/ciphers is pure JavaScript). Setting only the IV on a
 * keyed context is OpenSSL's documented way to do it (EVP_EncryptInit_ex with a NULL cipher and
 * key keeps both), as OpenSSH and other packet protocols do.
 *
 * The OpenSSL symbols are Node's own (the node binary exports its bundled OpenSSL to addons;
 * a node linked against the system's libcrypto has them from there), so the cipher is the one
 * node:crypto uses. The wire is unchanged: libs/tunnel/src/protocol/cipher.ts checks at load
 * that a frame sealed here equals node:crypto's, and falls back to node:crypto otherwise.
 *
 * Why this is safe:
 * - Nonces: this file never chooses one. The caller passes the 12-byte frame counter
 *   (cipher.ts, Direction), which never repeats under a key; a nonce of any other length is
 *   refused, so OpenSSL's IV length (12, set once at creation) always matches.
 * - Lengths: every buffer's length is checked before use: the key is 32 bytes, a sealed frame
 *   at least the 16-byte tag, and no input past MAX_BUFFER (1 GiB, far above a frame's 64 KiB),
 *   so every length fits OpenSSL's int and no sum overflows.
 * - Authentication: open() returns plaintext only after EVP_DecryptFinal_ex has checked the
 *   tag; on any failure the output is wiped (OPENSSL_cleanse) and undefined is returned, so no
 *   unauthenticated byte reaches JavaScript.
 * - Arguments: anything that is not a Buffer where one is expected, or a context that was
 *   freed, throws a TypeError or an Error; nothing is read through an unchecked pointer.
 * - Keys: OpenSSL copies the key schedule into the context; free() (called when the key is
 *   ratcheted or the session ends) and the garbage collector's finalizer both go through
 *   EVP_CIPHER_CTX_free, which wipes it. The caller wipes its own copy of the key.
 * - Threads: none. Every call runs on the JavaScript thread that owns the context.
 */
#include <node_api.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>

#define KEY_BYTES 32
#define NONCE_BYTES 12
#define TAG_BYTES 16
#define MAX_BUFFER ((size_t)1 << 30)

typedef struct {
  EVP_CIPHER_CTX *ctx;
  bool encrypt;
} frame_ctx;

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  frame_ctx *f = data;
  EVP_CIPHER_CTX_free(f->ctx); /* NULL once freed: a no-op */
  OPENSSL_free(f);
}

/* Throws a TypeError and returns false unless `value` is a Buffer (or Uint8Array). */
static bool buffer_arg(napi_env env, napi_value value, const char *what, unsigned char **data,
                       size_t *length) {
  bool is;
  if (napi_is_buffer(env, value, &is) != napi_ok || !is ||
      napi_get_buffer_info(env, value, (void **)data, length) != napi_ok) {
    napi_throw_type_error(env, NULL, what);
    return false;
  }
  if (*length > MAX_BUFFER) {
    napi_throw_range_error(env, NULL, "buffer too large");
    return false;
  }
  return true;
}

/* The open context behind argument 0, of the direction asked for; NULL after a throw. */
static frame_ctx *context_arg(napi_env env, napi_value value, bool encrypt) {
  napi_valuetype type;
  frame_ctx *f = NULL;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_external ||
      napi_get_value_external(env, value, (void **)&f) != napi_ok || f == NULL ||
      f->encrypt != encrypt) {
    napi_throw_type_error(env, NULL, encrypt ? "not a seal context" : "not an open context");
    return NULL;
  }
  if (f->ctx == NULL) {
    napi_throw_error(env, NULL, "context was freed");
    return NULL;
  }
  return f;
}

static bool nonce_arg(napi_env env, napi_value value, unsigned char **nonce) {
  size_t length;
  if (!buffer_arg(env, value, "nonce must be a Buffer", nonce, &length)) return false;
  if (length != NONCE_BYTES) {
    napi_throw_range_error(env, NULL, "nonce must be 12 bytes");
    return false;
  }
  return true;
}

/* The call's arguments into argv (at most max); throws `usage` unless at least min were given. */
static bool call_args(napi_env env, napi_callback_info info, size_t min, size_t max,
                      napi_value *argv, size_t *argc, const char *usage) {
  *argc = max;
  if (napi_get_cb_info(env, info, argc, argv, NULL, NULL) != napi_ok || *argc < min) {
    napi_throw_type_error(env, NULL, usage);
    return false;
  }
  return true;
}

/* A new Buffer of `length` bytes for the result; throws if it cannot be made. */
static bool result_buffer(napi_env env, size_t length, unsigned char **data, napi_value *result) {
  if (napi_create_buffer(env, length, (void **)data, result) != napi_ok) {
    napi_throw_error(env, NULL, "out of memory");
    return false;
  }
  return true;
}

/* What seal and open both take first: the context (of this direction) and the nonce. */
static frame_ctx *frame_args(napi_env env, napi_value *argv, bool encrypt,
                             unsigned char **nonce) {
  frame_ctx *f = context_arg(env, argv[0], encrypt);
  return f != NULL && nonce_arg(env, argv[1], nonce) ? f : NULL;
}

/* create(key: Buffer of 32 bytes, encrypt: boolean) -> external context */
static napi_value create(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[2];
  if (!call_args(env, info, 2, 2, argv, &argc, "create(key, encrypt)")) return NULL;
  unsigned char *key;
  size_t key_length;
  bool encrypt;
  if (!buffer_arg(env, argv[0], "key must be a Buffer", &key, &key_length)) return NULL;
  if (key_length != KEY_BYTES) {
    napi_throw_range_error(env, NULL, "key must be 32 bytes");
    return NULL;
  }
  if (napi_get_value_bool(env, argv[1], &encrypt) != napi_ok) {
    napi_throw_type_error(env, NULL, "encrypt must be a boolean");
    return NULL;
  }
  frame_ctx *f = OPENSSL_zalloc(sizeof *f);
  if (f == NULL || (f->ctx = EVP_CIPHER_CTX_new()) == NULL ||
      EVP_CipherInit_ex(f->ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, encrypt) != 1 ||
      EVP_CIPHER_CTX_ctrl(f->ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_BYTES, NULL) != 1 ||
      EVP_CipherInit_ex(f->ctx, NULL, NULL, key, NULL, encrypt) != 1) {
    if (f) EVP_CIPHER_CTX_free(f->ctx);
    OPENSSL_free(f);
    napi_throw_error(env, NULL, "OpenSSL could not make an AES-256-GCM context");
    return NULL;
  }
  f->encrypt = encrypt;
  napi_value external;
  if (napi_create_external(env, f, finalize, NULL, &external) != napi_ok) {
    EVP_CIPHER_CTX_free(f->ctx);
    OPENSSL_free(f);
    napi_throw_error(env, NULL, "could not wrap the context");
    return NULL;
  }
  return external;
}

/*
 * seal(ctx, nonce: 12 bytes, header: Buffer, body?: Buffer) -> Buffer
 * The sealed frame: ciphertext of header || body, then the 16-byte tag, in one new buffer.
 */
static napi_value seal(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[4];
  if (!call_args(env, info, 3, 4, argv, &argc, "seal(ctx, nonce, header, body?)")) return NULL;
  unsigned char *nonce, *header, *body = NULL;
  size_t header_length, body_length = 0;
  frame_ctx *f = frame_args(env, argv, true, &nonce);
  if (f == NULL || !buffer_arg(env, argv[2], "header must be a Buffer", &header, &header_length))
    return NULL;
  napi_valuetype type = napi_undefined;
  if (argc > 3 && napi_typeof(env, argv[3], &type) == napi_ok && type != napi_undefined &&
      !buffer_arg(env, argv[3], "body must be a Buffer", &body, &body_length))
    return NULL;
  /* Both lengths are at most MAX_BUFFER (2^30): the sum and the tag fit an int. */
  size_t length = header_length + body_length;
  napi_value result;
  unsigned char *out;
  if (!result_buffer(env, length + TAG_BYTES, &out, &result)) return NULL;
  int n;
  if (EVP_EncryptInit_ex(f->ctx, NULL, NULL, NULL, nonce) != 1 ||
      EVP_EncryptUpdate(f->ctx, out, &n, header, (int)header_length) != 1 ||
      (body_length > 0 &&
       EVP_EncryptUpdate(f->ctx, out + header_length, &n, body, (int)body_length) != 1) ||
      EVP_EncryptFinal_ex(f->ctx, out + length, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(f->ctx, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, out + length) != 1) {
    napi_throw_error(env, NULL, "AES-256-GCM seal failed");
    return NULL;
  }
  return result;
}

/*
 * open(ctx, nonce: 12 bytes, wire: Buffer) -> Buffer | undefined
 * The plaintext of a sealed frame whose tag checks under this nonce, else undefined.
 */
static napi_value open_frame(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[3];
  if (!call_args(env, info, 3, 3, argv, &argc, "open(ctx, nonce, wire)")) return NULL;
  unsigned char *nonce, *wire;
  size_t wire_length;
  frame_ctx *f = frame_args(env, argv, false, &nonce);
  if (f == NULL || !buffer_arg(env, argv[2], "wire must be a Buffer", &wire, &wire_length))
    return NULL;
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  if (wire_length < TAG_BYTES) return undefined;
  size_t length = wire_length - TAG_BYTES;
  napi_value result;
  unsigned char *out;
  if (!result_buffer(env, length, &out, &result)) return NULL;
  int n;
  /* The tag is copied into the context (SET_TAG) before Final compares it in constant time. */
  if (EVP_DecryptInit_ex(f->ctx, NULL, NULL, NULL, nonce) != 1 ||
      EVP_DecryptUpdate(f->ctx, out, &n, wire, (int)length) != 1 ||
      EVP_CIPHER_CTX_ctrl(f->ctx, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, wire + length) != 1 ||
      EVP_DecryptFinal_ex(f->ctx, out + length, &n) != 1) {
    OPENSSL_cleanse(out, length);
    return undefined;
  }
  return result;
}

/* free(ctx): wipes and frees the context now (the key was ratcheted or the session ended). */
static napi_value free_context(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[1];
  napi_valuetype type;
  frame_ctx *f = NULL;
  if (!call_args(env, info, 1, 1, argv, &argc, "free(ctx)")) return NULL;
  if (napi_typeof(env, argv[0], &type) != napi_ok || type != napi_external ||
      napi_get_value_external(env, argv[0], (void **)&f) != napi_ok || f == NULL) {
    napi_throw_type_error(env, NULL, "free(ctx)");
    return NULL;
  }
  EVP_CIPHER_CTX_free(f->ctx);
  f->ctx = NULL;
  return NULL;
}

static void export_function(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

NAPI_MODULE_INIT() {
  export_function(env, exports, "create", create);
  export_function(env, exports, "seal", seal);
  export_function(env, exports, "open", open_frame);
  export_function(env, exports, "free", free_context);
  return exports;
}
