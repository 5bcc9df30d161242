# Vmi in a container: the lab guest under QEMU (KVM when the host passes /dev/kvm, TCG otherwise).
# Not built in CI: no Docker engine runs on the build machines (see README).
FROM mcr.microsoft.com/dotnet/sdk:10.0-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends qemu-system-x86 gcc libc6-dev util-linux \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /vmi
COPY . .
RUN bash scripts/setup.sh
ENTRYPOINT ["./vmi"]
CMD ["lab", "run"]
