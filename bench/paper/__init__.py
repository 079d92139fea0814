"""The paper's case study (arXiv 2412.08642, section IV) as one benchmark: point-to-point video retrieval
over a noisy channel, the semantic system against a traditional one, side by side.

Input: a labelled video (--video, --labels: CSV `person,start_s,end_s,<person/1 fields>`, `#` comment
lines, `a|b` for several values; one person visible at a time), a video with MOTChallenge boxes (--video,
--gt gt.txt, --attributes: CSV `id,<person/1 fields>` per gt identity; a keyframe shows the identity whose
box overlaps its own by IoU >= --iou, boxes interpolated between annotated frames; --partial-gt leaves
records that show nobody out of precision), or a labelled crop set in the PETA layout (--crops: a folder
with peta_labels.csv and the images; a seeded sample of --max-crops crops, each crop one keyframe, each
scored by the leave-one-subset-out fold model in --fold-models that did not train on its subset; without
folds the run is refused unless --in-sample, which every output then names). --suite runs the whole
evaluation (see `semcom bench paper --suite --help`). See docs/paper-bench.md.

Schemes, each through the daemons' own code (txd's perception, understanding, codec and phy; channel-sim's
proxy and models; rxd's burst decoding, describer, embedder, parser and ranking):
  semantic            txd's records (the configured understanding backend) in the bit-packed codec, framed as
                      txd's link frames them (at most link.max_records_per_burst per frame), txd's MCS
  semantic-text       the same records in the paper's text-entry format, same link
  oracle              the semantic link with labels in place of the attribute model (video: each keyframe
                      takes the labels of the person whose time range holds it; others are dropped)
  traditional         the pixels: the video re-encoded with libx264 at --video-bitrate-kbps (IDR every
                      --gop-s) and muxed as MPEG-TS, or the crops' JPEG files back to back; cut into bursts of
                      --burst-bytes, rate-1/2 LDPC + 16-QAM (--traditional-mcs), sent once (no ARQ); the
                      receiver decodes whatever survives (errors per packet are skipped) and runs the same
                      perception and understanding on it. A bit-identical stream reuses the clean result; a
                      stream whose every LDPC block failed yields nothing; only partly corrupted streams are
                      perceived again (detector and embedder results are shared by frame content).
  traditional-oracle  the traditional link with labels in place of the attribute model
On an AWGN-only channel the traditional link samples block errors (--sampling auto): --probe-bursts bursts
per channel draw go through the real LDPC chain and every codeword of the stream takes the outcome of a
random probe codeword at its position (codewords fail independently on a memoryless channel; a test checks
block and bit error rates against the full simulation); --sampling full decodes every burst.

Metrics per scheme and SNR point (mean over queries x --seeds channel draws, error bars one standard error):
  retrieved   hits of the exact tier (every slot the receiver's parser found matches) among --top-k;
              --match compatible: every hit with no slot contradicted (fields reported unknown allowed)
  precision   share of retrieved records that show a target satisfying the query: the paper's accuracy;
              0 when nothing is retrieved. Video: the person whose range (widened by --tolerance-s)
              holds the record's time, or the gt identity its keyframe box matches; crops: the crop (a
              colour matches when it is among the target's colours). Also averaged over the queries
              that retrieved something only ("where answered"): the scorer's check
  recall      share of satisfying targets with at least one retrieved record, over min(their number, top_k)
  F1          per query, harmonic mean of precision and recall
  ranked      precision@1/5/10 and average precision over the engine's ranked hits, averaged over the
              queries with >= --min-positives satisfying targets (the others reported apart); a
              precision-recall plot per scheme
  robustness  population std across the SNR points of the mean precision (also for recall and F1)
  bits        counted from the bursts built: information bits (frames with codec headers and CRC) and
              channel bits (symbols x bits per symbol, pilots included); airtime at --symbol-rate
Queries come from the labels: every attribute value some target carries, and the full known-attribute
combination of each target (at most --max-combinations, seeded), each phrased like the paper's "the man
wearing a white long-sleeved shirt, black pants and black shoes" and run as text through rxd's parser.
--queries FILE runs a saved set instead (a JSON list of {query_id, kind, slots, text}, or a results.json).

Output in --out: results.json (config, sample, queries, every per-query score), results.md (Fig. 7 data,
ranked metrics, Table II), accuracy_vs_snr.png, overhead.png, precision_recall.png.
"""
