// What phase 3 of a batch-16 decode stack would cost (docs/perf/cuda_model.md, "Next for batch
// 16"): 128 blocks (one per SM) each holding 16 rows × (R + 2N) = 2,560 partial sums of x_proj (the
// 1.4b shape) must add them over all blocks, exactly (int64 fixed point, so the order of arrival
// does not matter). Three ways, each run for 48 "layers" in one launch, µs a layer:
//   direct:  every block adds all of its partials with 64-bit atomics (327,680 a layer);
//   cluster: blocks in clusters of 8 first add their partials through distributed shared memory in
//            a fixed order (block r of a cluster sums outputs r, r + 8, … over the 8 blocks), then
//            one atomic per output and cluster (40,960 a layer);
//   none:    the partials computed and kept in shared memory only (the floor of the two above).
// Each also with the layers separated by a grid-wide barrier (a counter every block adds to and
// polls, as the decode stack's), so that a layer's atomics land before the next one starts: the
// stack's phase 3 pays their latency, not only their rate.
// Usage: cluster_sum_bench   (prints a table; checks the direct and cluster sums agree exactly)
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace cg = cooperative_groups;

namespace {

constexpr int kBlocks = 128, kClusterSize = 8, kThreads = 256, kOutputs = 2560, kLayers = 48;
constexpr int kPerThread = kOutputs / kThreads;
constexpr double kUnit = 4294967296.0;  // 2^32: fixed-point units of a sum

enum class Mode { none, direct, cluster };

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "cluster_sum_bench: %s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

// A block's partial sum for output i of layer `layer`: any values in (−1, 1) that differ by block.
__device__ float partial(int block, int i, int layer) {
  return __sinf(0.001f * float(block * 7919 + i * 31 + layer * 104729));
}

__device__ long long to_fixed(float v) { return __double2ll_rn(double(v) * kUnit); }

// All kBlocks blocks are resident (require_all_resident), so a counter-and-poll barrier cannot hang.
__device__ void grid_barrier(unsigned* arrivals, unsigned target) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(arrivals, 1u);
    while (atomicAdd(arrivals, 0u) < target) {
    }
    __threadfence();
  }
  __syncthreads();
}

template <Mode kMode, bool kSynced>
__global__ void __cluster_dims__(kClusterSize, 1, 1) __launch_bounds__(kThreads)
    reduce_kernel(unsigned long long* sums, float* sink, unsigned* arrivals) {
  __shared__ float parts[kOutputs];
  cg::cluster_group cluster = cg::this_cluster();
  const int block = int(blockIdx.x), rank = int(cluster.block_rank());
  for (int layer = 0; layer < kLayers; ++layer) {
    unsigned long long* layer_sums = sums + size_t(layer) * kOutputs;
    for (int j = 0; j < kPerThread; ++j) {
      const int i = threadIdx.x + j * kThreads;
      parts[i] = partial(block, i, layer);
    }
    if constexpr (kMode == Mode::direct) {
      __syncthreads();
      for (int j = 0; j < kPerThread; ++j) {
        const int i = threadIdx.x + j * kThreads;
        atomicAdd(layer_sums + i, static_cast<unsigned long long>(to_fixed(parts[i])));
      }
    } else if constexpr (kMode == Mode::cluster) {
      cluster.sync();  // every block's parts written
      for (int i = rank + kClusterSize * int(threadIdx.x); i < kOutputs; i += kClusterSize * kThreads) {
        float remote[kClusterSize];  // all loads issued before any is used
#pragma unroll
        for (int r = 0; r < kClusterSize; ++r) remote[r] = cluster.map_shared_rank(parts, r)[i];
        long long total = 0;
#pragma unroll
        for (int r = 0; r < kClusterSize; ++r) total += to_fixed(remote[r]);
        atomicAdd(layer_sums + i, static_cast<unsigned long long>(total));
      }
      cluster.sync();  // every block done reading before the next layer overwrites
    } else {
      __syncthreads();
      if (parts[(threadIdx.x * 7 + layer) % kOutputs] == 2.0f) sink[threadIdx.x] = 1.0f;  // never: keeps the work
      __syncthreads();
    }
    if constexpr (kSynced) grid_barrier(arrivals, unsigned(layer + 1) * kBlocks);
  }
}

template <Mode kMode, bool kSynced>
double run_us_per_layer(unsigned long long* sums, float* sink, unsigned* arrivals) {
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<float> times;
  for (int rep = 0; rep < 11; ++rep) {
    check(cudaMemset(sums, 0, sizeof(unsigned long long) * kOutputs * kLayers), "cudaMemset");
    check(cudaMemset(arrivals, 0, sizeof(unsigned)), "cudaMemset");
    check(cudaEventRecord(start), "cudaEventRecord");
    reduce_kernel<kMode, kSynced><<<kBlocks, kThreads>>>(sums, sink, arrivals);
    check(cudaGetLastError(), "launch");
    check(cudaEventRecord(stop), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    if (rep > 0) times.push_back(ms);  // the first run warms up
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2] * 1e3 / kLayers;
}

std::vector<unsigned long long> copy_sums(const unsigned long long* sums) {
  std::vector<unsigned long long> host(size_t(kOutputs) * kLayers);
  check(cudaMemcpy(host.data(), sums, host.size() * sizeof(host[0]), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return host;
}

}  // namespace

// The barrier variants spin until every block arrives, so all must be resident at once: refuse,
// rather than hang, on a GPU that cannot hold kBlocks / kClusterSize clusters.
void require_all_resident() {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(kBlocks);
  config.blockDim = dim3(kThreads);
  cudaLaunchAttribute cluster;
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = kClusterSize;
  cluster.val.clusterDim.y = cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = 1;
  int resident = 0;
  check(cudaOccupancyMaxActiveClusters(&resident, reduce_kernel<Mode::cluster, true>, &config),
        "cudaOccupancyMaxActiveClusters");
  if (resident < kBlocks / kClusterSize) {
    std::fprintf(stderr, "cluster_sum_bench: this GPU holds %d clusters of %d blocks at once, %d needed\n", resident,
                 kClusterSize, kBlocks / kClusterSize);
    std::exit(1);
  }
}

int main() {
  require_all_resident();
  unsigned long long* sums = nullptr;
  float* sink = nullptr;
  unsigned* arrivals = nullptr;
  check(cudaMalloc(&sums, sizeof(unsigned long long) * kOutputs * kLayers), "cudaMalloc");
  check(cudaMalloc(&sink, sizeof(float) * kThreads), "cudaMalloc");
  check(cudaMalloc(&arrivals, sizeof(unsigned)), "cudaMalloc");
  std::printf("x_proj partial sums, %d blocks x %d outputs, %d layers a launch (median of 10), us a layer\n", kBlocks,
              kOutputs, kLayers);
  std::printf("                               free-running   a grid barrier a layer\n");
  bool same = true;
  auto row = [&](const char* name, double free_us, double synced_us) {
    std::printf("  %-28s %8.2f %12.2f\n", name, free_us, synced_us);
  };
  row("none (partials only)", run_us_per_layer<Mode::none, false>(sums, sink, arrivals),
      run_us_per_layer<Mode::none, true>(sums, sink, arrivals));
  const double direct_free = run_us_per_layer<Mode::direct, false>(sums, sink, arrivals);
  const std::vector<unsigned long long> direct_sums = copy_sums(sums);
  row("direct (327680 atomics)", direct_free, run_us_per_layer<Mode::direct, true>(sums, sink, arrivals));
  same = same && copy_sums(sums) == direct_sums;
  const double cluster_free = run_us_per_layer<Mode::cluster, false>(sums, sink, arrivals);
  same = same && copy_sums(sums) == direct_sums;
  row("cluster of 8 (40960 atomics)", cluster_free, run_us_per_layer<Mode::cluster, true>(sums, sink, arrivals));
  same = same && copy_sums(sums) == direct_sums;
  std::printf("  every way's sums equal bit for bit: %s\n", same ? "yes" : "NO");
  return same ? 0 : 1;
}
