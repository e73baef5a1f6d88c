# Built by scripts/build-native.js at `npm ci` (package.json "install"); optional: without it
# the tunnel seals frames with node:crypto (libs/tunnel/src/protocol/native-gcm.ts).
{
  "targets": [
    {
      "target_name": "frame_cipher",
      "sources": ["frame_cipher.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-fvisibility=hidden"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
