#!/usr/bin/env bash
# Regenerate assets/sample.ts: a 12 s MPEG-TS test clip (H.264 + AAC) with a keyframe every second,
# used by the `ts` cutter tests and embedded by the demo. Requires ffmpeg with libx264.
# Video is ~260 kbit/s (not 300) so the file, with TS overhead and 64k AAC, stays under 600 KB.
set -euo pipefail

cd "$(dirname "$0")/.."
mkdir -p assets
out=assets/sample.ts

video_src="testsrc2=size=426x240:rate=25:duration=12"
audio_src="sine=frequency=440:sample_rate=48000:duration=12"
label="drawtext=text='Relaycast sample %{pts\\:hms}':x=8:y=h-th-8:fontsize=18:fontcolor=white:box=1:boxcolor=black@0.5"

encode() {
    local vf=("$@")
    ffmpeg -hide_banner -loglevel error -y \
        -f lavfi -i "$video_src" \
        -f lavfi -i "$audio_src" \
        "${vf[@]}" \
        -map 0:v -map 1:a \
        -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p \
        -b:v 260k -maxrate 300k -bufsize 300k \
        -g 25 -keyint_min 25 -sc_threshold 0 \
        -c:a aac -b:a 64k -ac 1 \
        -t 12 -f mpegts "$out"
}

# drawtext needs a usable font; testsrc2 moves on its own, so the label is optional.
if ! encode -vf "$label"; then
    echo "make-sample: drawtext failed, encoding without label" >&2
    encode
fi

ls -l "$out"
