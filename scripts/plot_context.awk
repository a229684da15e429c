# Decode time per token and peak memory against context length (log scale), as an SVG on stdout.
# Input lines: CONTEXT MS_PER_TOKEN PEAK_MEMORY_MIB. Variables: title, memory (the memory axis' name).
# Used by scripts/bench_cpu.sh (CPU) and scripts/gpu/run.sh context (GPU).
NF == 3 { n++; x[n] = log($1) / log(10); ms[n] = $2; mib[n] = $3 }
END {
  W = 640; H = 360; L = 70; R = 70; T = 40; B = 50
  xmin = x[1]; xmax = x[n]; if (xmax == xmin) xmax = xmin + 1
  for (i = 1; i <= n; i++) { if (ms[i] > msmax) msmax = ms[i]; if (mib[i] > mibmax) mibmax = mib[i] }
  msmax *= 1.25; mibmax *= 1.25
  printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H
  printf "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
  printf "<text x=\"%d\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">%s</text>\n", W / 2, title
  printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", L, H - B, W - R, H - B
  printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", L, T, L, H - B
  printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", W - R, T, W - R, H - B
  for (i = 1; i <= n; i++) {
    px[i] = L + (x[i] - xmin) / (xmax - xmin) * (W - L - R)
    py[i] = H - B - ms[i] / msmax * (H - T - B); qy[i] = H - B - mib[i] / mibmax * (H - T - B)
    printf "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", px[i], H - B + 16, 10 ^ x[i] + 0.5
  }
  printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">context (prompt tokens before decoding, log scale)</text>\n", W / 2, H - 12
  printf "<text x=\"%d\" y=\"%d\" fill=\"#1f77b4\" transform=\"rotate(-90 18 %d)\" text-anchor=\"middle\">decode ms per token (0 to %.1f)</text>\n", 18, H / 2, H / 2, msmax
  printf "<text x=\"%d\" y=\"%d\" fill=\"#d62728\" transform=\"rotate(90 %d %d)\" text-anchor=\"middle\">%s (0 to %.0f)</text>\n", W - 18, H / 2, W - 18, H / 2, memory, mibmax
  for (s = 0; s < 2; s++) {
    color = s ? "#d62728" : "#1f77b4"; line = ""
    for (i = 1; i <= n; i++) line = line sprintf("%.1f,%.1f ", px[i], s ? qy[i] : py[i])
    printf "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"%s\"/>\n", color, line
    for (i = 1; i <= n; i++) {
      printf "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>\n", px[i], s ? qy[i] : py[i], color
      printf "<text x=\"%.1f\" y=\"%.1f\" fill=\"%s\" text-anchor=\"middle\">%s</text>\n", px[i], (s ? qy[i] : py[i]) - 8, color, s ? sprintf("%.0f", mib[i]) : sprintf("%.2f", ms[i])
    }
  }
  print "</svg>"
}
