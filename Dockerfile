# kbus as a static musl binary in an otherwise empty image.
#
#   docker build -t kbus .
#   docker run --rm --network host kbus -b 127.0.0.1:9092 topics list
#
# The builder is plain Debian 12 with Debian's Rust (rustc-web, Rust >= 1.88) and std rebuilt
# for x86_64-unknown-linux-musl: the same scripts/build-static that CI runs and checks.
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN scripts/build-static --install \
 && mkdir -p /out/etc \
 && cp target/x86_64-unknown-linux-musl/dist/kbus /out/kbus \
 && printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >/out/etc/hosts

FROM scratch
COPY --from=build /out/ /
USER 65534:65534
ENTRYPOINT ["/kbus"]
