"""Synthetic RadioML: frames of every class, in the exact RadioML 2018.01A or 2016.10a layout.

Neither real file can be downloaded here (see the project notes on data), so the default run and
the tests use frames made by this module. The layouts come from `flows.rml_formats`:

- rml2018: HDF5 with `X` (N, 1024, 2) float32 (I/Q last), `Y` (N, 24) int64 one-hot, `Z` (N, 1)
  int64 SNR in dB; rows class-then-SNR ascending, N = classes x SNRs x frames_per_cell.
- rml2016: a pickle of dict (modulation, snr) -> (frames_per_cell, 2, 128) float32.

SNR definition
--------------
The true SNR is SNR_dB = 10 log10(P_s / P_n), per frame, where P_s is the mean of |s[n]|^2 over
the frame's complex samples of the received signal (after pulse shaping, multipath, fading and
offsets) and P_n = E|w[n]|^2 is the power of the complex white Gaussian noise (P_n / 2 per I and
per Q), both over the full sampled band (-fs/2, fs/2). It is a per-sample power ratio, not Es/N0:
at 8 samples per symbol Es/N0 = SNR + 10 log10(8) = SNR + 9.03 dB.

The label L stored with a frame (`Z` in rml2018, the dict key in rml2016) is the RadioML
generators' SNR parameter, not the true SNR (`Physics.snr_label`, `true_snr_db`): the public 2016
generator (radioML/dataset, generate_RML2016.10a.py) passes `noise_amp = 10 ** (-snr / 10.0)` to
GNU Radio's `channels.dynamic_channel_model`, whose `fastnoise_source_c` (GNU Radio 3.7) draws
noise_amp x (N(0, 1) + j N(0, 1)): noise power 2 x 10^(-L/5) against a unit-power signal (the
generic_mod pulse filter has unit gain at the symbol rate and constellations mean |s| = 1), so
the true SNR is 2 L - 3.01 dB: +30 -> 57 dB, +10 -> 17 dB, 0 -> -3 dB, -20 -> -43 dB. Both
layouts follow it. For 2016 it is the published code; for 2018, whose generator is not published,
it is what the real-data VGG10 says (`benchmarks/bench_realism.py`, 32 frames per cell): with the
label as the true SNR its accuracy is twice chance at -20 dB (0.09) and still rising between +10
and +18 dB (0.64 -> 0.80), a curve about half as steep as published accuracy curves on the real
file, which sit near chance at -20 dB and level off at about +6 to +10 dB; with this label the
judge is at chance (0.04 - 0.06) up to -10 dB and level from +10 dB (0.79 - 0.83). Side effect on
the headline: frames of a given label are cleaner, so realism at SNR >= 10 dB rose 0.774 ->
0.811. (2 L without the 3 dB of the complex noise source measured the same: 0.812.) Measured
without the judge: the real +30 dB 16QAM frame (../shared/reference/radioml-frame, digitised,
which can only add error) has a spectrum floor of -57 dB at 0.3-0.5 cycles/sample (Welch, Hann
128) below its in-band level; white noise at a true SNR of 30 dB would sit at -39 dB there, at
57 dB at -66 dB.

Frame level (rml2018): each frame's signal is brought to unit power, multiplied by its class's
level r (`Modulation.frame_rms`: 1 for PSK, FM, GMSK, OQPSK, DSB, the cross QAMs and the APSKs,
the mean-amplitude rule below for square QAM and ASK, U(2, 3) for SSB), the noise is added at the
label's power against a unit-power signal, and the frame is divided by sqrt(1 + noise power), a
gain common to every class at that label: like a GNU Radio chain, where the noise is set by the
label and each signal's power by its own normalisation, so a class of level r has a true SNR
20 log10 r above the label's (OOK +3.0 dB, 4ASK +1.9, 8ASK +1.5, square QAM +0.4 to +0.7, SSB
+6.0 to +9.5). At high SNR a frame's rms is r; where noise dominates it tends to 1 for every
class, so the level tells nothing about the class there, as on the real file, where models sit
at chance at -20 dB. (Scaling each noisy frame to unit power and only then by r, as before,
gave the level away at every SNR: a small CNN trained on 8 classes identified 4ASK and 16QAM by
their rms alone at -20 dB, 0.37 accuracy against a chance of 0.125, `bench_synth_learnable`.)
rml2016 frames are scaled to unit L1 norm (sum |x| = 1, like the real 2016 generator).
`snr_db=math.inf` gives noise-free frames; the noise comes from its own stream, so the same RNG
state gives the same signal with and without noise.

Physical choices (fields of `Physics` and `Modulation`)
-------------------------------------------------------
Each line: rml2018 choice [rml2016 choice] -- why. "Realism" is the mean per-class accuracy at
SNR >= 10 dB of the real-data VGG10 on these frames (`benchmarks/bench_realism.py`); it measures
choices made for the physical reasons given, it never picks values by search (table below).

- Oversampling: 8 samples/symbol [8] -- both files; the real-data VGG10 fails at 2, 4 or 16.
- Link pulse: a raised-cosine amplitude response whose half-amplitude point sits at 0.915 x half
  the symbol rate (0.0572 cycles/sample), roll-off 0.417, the same for every frame [root raised
  cosine, roll-off 0.35, Nyquist] -- a least-squares fit (rms error 0.011) of that response to
  the pulse measured on a real +30 dB 16QAM frame (../shared/reference/radioml-frame), whose
  zero crossings are 8.7 samples apart: the real link is slightly narrower than Nyquist (some
  ISI), like a transmit pulse followed by a receiver channel filter. It also gives the 0.12 fs
  flat-topped spectrum measured on the real file. A Nyquist RC with roll-off U(0.15, 0.35)
  scored 0.35 -> 0.34 here, the fitted pulse 0.49. (`pulse_half_amplitude_ratio`,
  `rolloff_range`.) Shaped in the DFT domain, so frames could each have their own roll-off.
- Amplitude-keyed classes (OOK, 4ASK, 8ASK; `Modulation.pulse`): a transmit-only root raised
  cosine, roll-off 0.35 (GNU Radio `generic_mod`'s default excess bandwidth), Nyquist at 8
  samples/symbol, without the narrower receive-side response of the other linear classes. Two
  definitions of the keyed classes' pulse were measured, nothing in between: with the link pulse
  OOK was read as 32APSK (OOK 0.09 at SNR >= 10 dB), with the transmit RRC as OOK (0.92; the
  more out-of-band energy, the more OOK-like: RC 0.35 Nyquist 0.41, RRC 0.35 centred at the link
  pulse 0.47); a keyed NRZ carrier without filter 0.67-0.90. 16QAM with this RRC drops to 0 %, so
  the link pulse stays for the other classes. 4ASK/8ASK follow OOK for consistency (no
  measurable change: 0.06/0.04 -> 0.07/0.01; bipolar 4ASK/8ASK with this RRC read as OOK 100 %).
  Realism 0.553 -> 0.586. Re-measured once the frame level rule below was in: OOK no longer
  needs it (link pulse 1.00 too), 4ASK/8ASK trade (RRC 0.53/0.70, link pulse 0.22/0.89;
  realism 0.685 vs 0.680), so the RRC stays, with 4ASK above 0.5 at +30 dB.
- Constellations: stored at unit mean power (the frame level is set apart, below); PSK
  exp(j 2 pi k / M), QPSK at pi/4; OOK, 4ASK and 8ASK unipolar amplitude levels {0..M-1} (M-ASK as
  OOK's generalisation: a keyed carrier amplitude; bipolar PAM was read as OOK or 32APSK at every
  pulse and level tried, unipolar is recognised once the frame level is right) [PAM4 bipolar];
  square 16/64/256QAM, cross 32QAM (6x6 minus corners) and 128QAM (12x12 minus 2x2 corners); APSK
  on DVB-S2/S2X rings: 16 = 4+12 (radius ratio 2.75, code rate 4/5), 32 = 4+12+16 (2.84, 5.27,
  rate 3/4), 128 = the DVB-S2X 128APSK of code rate 135/180 point by point
  (`dvbs2x_128apsk_points`: rings 16+16+16+16+16+48 at 1.715, 2.118, 2.681, 2.75, 3.819, each point
  at its tabulated angle, as GNU Radio's gr-dtv modulator has it; measured: 128APSK 0.63 -> 0.80
  against the earlier approximation with evenly spaced points and an outer ring at 3.6, in which
  rings 4 and 5 put points at the same angles 2.5 % apart in radius); ring phases as in DVB-S2: the
  first point of an n-ring at pi/n (4-ring pi/4, 12-ring pi/12), except 32APSK's outer 16-ring,
  which starts on the I axis (EN 302 307-1; measured: 32APSK 0.920 -> 0.918, no change); 64APSK is
  liquid-dsp's APSK64 (`LIQUID_APSK64`: rings 4+14+20+26, radius ratios 2.77, 4.68, 6.90, every
  ring's first point on the I axis), the one published 64APSK besides DVB-S2X's three, none of
  which the real-data VGG10 reads as 64APSK (4+12+20+28 at 2.4, 4.3, 7.0: 0.09, read as 128APSK
  70 %; 8+16+20+20 and 16+16+16+16: 0.00). Measured: 64APSK 0.09 -> 0.19 (+30 dB 0.19 -> 0.31),
  still read as 128APSK 70 %; realism 0.730 -> 0.735; at liquid-dsp's own unit power (frame level,
  below) 0.67. liquid-dsp's 16/32/128APSK did not follow (dropped, below). OOK, ASK and BPSK are
  real before the channel.
- OQPSK: the 4-PSK points on the axes {1, j, -1, -j} (GNU Radio's generic PSK constellation,
  `digital.psk_constellation(4)`: exp(j 2 pi k / M), not the pi/4-rotated `constellation_qpsk`)
  with the quadrature rail delayed by half a symbol, so in each symbol only one rail is non-zero
  and the two rails alternate. For QPSK the rotation is invisible after the random carrier
  phase; for OQPSK it is not. The textbook pi/4 points (both rails +-1/sqrt 2 every symbol) were
  read as 32PSK/32QAM (OQPSK 0.00 at SNR >= 10 dB, also with a Nyquist RC or transmit RRC, a
  half-sine (MSK-like) or rectangular pulse, or a 1-12 sample offset); the axis points 1.00
  (realism 0.600 -> 0.642).
- CPM: GMSK h 0.5, BT 0.35 -- GNU Radio's `gmsk_mod` default and the 2016 generator's GFSK BT
  (BT 0.3, the GSM value, made GMSK read as FM) [CPFSK h 0.5 rectangular; GFSK 0.1 rad/sample
  = h 0.255, BT 0.35, the 2016 generator's values].
- Analog message: speech-like -- a sawtooth glottal source at a pitch of 100-250 Hz mixed with
  noise, shaped by three formants (300-900, 900-2500, 2500-3500 Hz) and band-limited to
  100-3400 Hz [100-8000 Hz]; tone or plain-noise messages fail on the real-data VGG10. The
  message has no DC, so DSB spectra have twin peaks.
- Speech level per frame (`speech_activity`, `speech_level_db_range`, `speech_pause_db`): a frame
  (about 10 ms of audio at 100 kS/s) is a short window of a long recording whose peak, not the
  frame's, sets the modulation, so its message peaks at a fraction of the recording's peak: in
  active speech U(-20, 0) dB (the short-term level of running speech spans some 20-30 dB), and
  40 % of frames fall in pauses, at -40 dB (speech activity about 60 %, as ITU-T P.59 gives for
  a talker) [same]. All analog classes (DSB, SSB, FM) take it; index, deviation and carriers are
  set against the recording's peak. Before, every frame's message was brought to peak 1, as if
  each 10 ms were the loudest of the recording. Measured: AM-DSB-WC 0.00 -> 0.54 at SNR >= 10 dB
  (+30 dB 0.00 -> 0.69), read as DSB-SC 42 %, and DSB-SC 0.74 -> 0.40 (+30 dB 0.81 -> 0.47),
  read as DSB-WC 57 %: the two DSB classes now confuse each other both ways, as they do on real
  data, where before every DSB frame was DSB-SC; AM-SSB-SC 0.78 -> 0.92, AM-SSB-WC 0.33 ->
  0.15 (read as SSB-SC 81 %); FM 0.99 -> 0.98; realism 0.812 -> 0.817. (A helper measured the
  level spread and the pauses apart first, 0.818 and 0.814, then together.)
- Assumed sample rate, for the message only: 100 kS/s [200 kS/s] -- 2018 does not publish it;
  at 100 kS/s NBFM deviations of 2.5-5 kHz are 0.025-0.05 cycles/sample. 2016 used 200 kS/s.
  (300 kS/s and 1 MS/s changed nothing measurable for the AM classes.)
- AM-DSB: WC 1 + mu m with mu U(0.3, 0.8), SC m (message peak 1) [WC, mu U(0.2, 0.5): index
  <= 0.5 in 2016], on a real IF carrier cos(2 pi f_IF n + phase), f_IF = 0.026 cycles/sample
  (`am_if_cycles_per_sample`) [none]. Why: the real 2018 DSB classes both have a symmetric
  twin-peak spectrum, which a real-valued AM signal on a real cosine carrier has (a copy at
  +-f_IF; GNU Radio: float audio times `sig_source_f`, then `float_to_complex`); the 2016
  generator's AM chain has a carrier source whose non-zero frequency is commented out. f_IF is
  not published; it is set so that the AM spectrum reaches the edge of the digital classes'
  band, f_IF + 3.4 kHz / 100 kS/s = 0.06 cycles/sample (the real file's 0.12 fs-wide spectra),
  not fitted. Measured: baseband AM 0.00 / 0.00 (DSB-WC / DSB-SC at SNR >= 10 dB, read as
  256QAM); f_IF 0.026: DSB-SC 0.30 and DSB-WC read as DSB-SC 75 % (the two are confused on
  real data too); realism 0.684 -> 0.696. Probed before choosing the rule: f_IF 0.25 (the
  commented-out 50 kHz at 200 kS/s) read as SSB/8ASK, 0.03 like 0.026.
- AM-DSB-SC carrier: a leaked carrier of U(1.1, 3.3) x the message peak
  (`dsb_residual_carrier_range`) [none: 2016 has no DSB-SC] -- the same model as SSB-SC below
  (an imperfect carrier null or a DC offset in the message), for the same reason: the real file
  describes both DSB classes by one spectrum, symmetric twin peaks, which on a real IF carrier
  are the carrier lines at +-f_IF; a true SC has no line there, only sideband lobes either side
  of it. Measured: DSB-SC 0.30 -> 0.84 at SNR >= 10 dB (a true SC was read as OOK 53 %); a
  DSB-WC index from the 2016 generator, U(0.2, 0.5), was read as DSB-SC 99 %, so the real
  DSB-SC is carrier-dominated; DSB-WC stays at 0 (read as DSB-SC; the two are confused on real
  data too).
- AM-SSB, upper sideband: WC carrier 1 + sideband of envelope peak 1 (`ssb_sideband_range`);
  SC a leaked carrier of U(1.1, 3.3) x the sideband peak (the inverse of WC's earlier ratio range
  U(0.3, 0.9)) -- WC is full-carrier SSB as ITU-R defines it (emission class H3E: the carrier
  amplitude equals the sideband's peak amplitude, 100 % modulation at speech peaks, so the
  peak envelope is twice the carrier); measured: SSB-WC 0.30 -> 0.41 at SNR >= 10 dB (read as
  SSB-SC 0.66 -> 0.31, 8ASK 0.28), SSB-SC unchanged. SC: the real 2018
  SSB classes both look carrier-dominated (narrowband, near-constant envelope) and are confused
  with each other even at high SNR, so the measured real frames do not support a suppressed
  carrier in SC: a carrier that is not suppressed (a DC offset in the message or an imperfect
  carrier null of the modulator) gives exactly that. A residual carrier of U(0, 0.3) x the
  sideband peak (a true SC) was read as 8ASK (SC 0.33 at SNR >= 10 dB); the leaked carrier
  0.69 (full benchmark; realism 0.586 -> 0.600); WC was unchanged by it (read as SC 65 %).
  [AM-SSB: a real SSB-SC; the real 2016 class is noise from a generator bug.]
- Frame level of the linear classes (`Modulation.frame_rms`, `mean_amplitude_rms`; the
  table-defined constellations are the exception, next item): the constellation is scaled to unit
  mean amplitude, mean |s| = 1 (the rule of the 2016 generator, and of torchsig), so a frame's rms
  relative to a unit-power frame is sqrt(E|s|^2) / E|s|: 1 for PSK and OQPSK, 1.05-1.08 for QAM and
  APSK, 1.41 for OOK, 1.25 for 4ASK, 1.19 for 8ASK (unipolar). The real +30 dB 16QAM frame has rms
  1.035 (this rule: 1.056; unit power: 1.0). Measured against unit-power frames for every class:
  OOK 0.92 -> 1.00, 4ASK 0.07 -> 0.53, 8ASK 0.01 -> 0.70 (the three now confused mostly with each
  other); 256QAM 0.65 -> 0.82, 128APSK 0.42 -> 0.65, 32APSK 0.88 -> 0.92; but 16APSK 0.98 -> 0.84,
  16QAM 0.95 -> 0.91, 32QAM 0.78 -> 0.55, 128QAM 0.60 -> 0.40, 64APSK 0.11 -> 0.07; realism
  0.642 -> 0.685. The ASK classes at rms 0.8 instead were read as 32APSK/256QAM (0 %).
- Frame level of the table-defined constellations, the cross QAMs (32QAM, 128QAM) and the APSKs:
  unit power (`_unit_power_linear`) -- the mean-amplitude rule is that of GNU Radio's constellation
  objects (gr-digital's `constellation` base class and O'Shea's gr-mapper scale to mean |s| = 1),
  but neither builds a cross QAM or an APSK: `digital.qam_constellation` raises for an M that is
  not a power of 4, gr-mapper has QAM16 and QAM64 only, and gr-dtv's DVB-S2 tables sit inside its
  modulator block. These classes come from tables made elsewhere, e.g. fed to
  `digital.chunks_to_symbols_bc`, which does not normalise: a hand-made table is usually normalised
  to unit average energy (as DVB-S2 APSK tables in simulation code are), and liquid-dsp's modems,
  which have both cross QAMs (SQAM32, SQAM128: the same 6x6 and 12x12 crosses) and the 64APSK used
  here, emit unit-power symbols. Caveat: ASK has no gr-digital builder either, yet measures far
  better with the mean-amplitude rule (above). Measured, in three steps: the cross QAMs, 32QAM
  0.55 -> 0.76, 128QAM 0.40 -> 0.62 (+30 dB 0.44 -> 0.59), other classes unchanged, realism
  0.735 -> 0.752; liquid-dsp's 64APSK, 0.19 -> 0.67 (+30 dB 0.31 -> 0.81, read as 128APSK
  70 % -> 23 %; the DVB-S2X 4+12+20+28 at unit power had measured 0.11), 0.752 -> 0.772; the DVB
  APSKs, 16APSK 0.81 -> 0.99, but 32APSK 0.92 -> 0.88 and 128APSK 0.80 -> 0.71 (read as 64APSK
  20 %), 0.772 -> 0.774, kept for the one rule over all table-defined constellations (a tie within
  the benchmark's noise).
- Frame level, other classes: FM, GMSK and DSB frames unit power; SSB frames rms U(2, 3) --
  real +30 dB SSB frames exceed the
  [-2, 2] range that holds 98.3 % of the other classes' samples while looking carrier-dominated
  (near-constant envelope), so their rms is above 2: the real generator did not bring them to
  unit power. The level applies to the signal before the noise (SNR definition above).
- FM: peak deviation U(2.5, 5) kHz [WBFM U(15, 37.5) kHz: 75 kHz x audio peak <= 0.5].
- Sample-rate (clock) offset: U(+-0.025 %), the 2016 generator's value [same: 50 Hz at
  200 kHz], by 4-point cubic interpolation (error below -60 dB at 8 samples/symbol); the paper
  lists symbol-rate offsets. A least-squares fit of the real +30 dB 16QAM frame with the link
  pulse at symbol spacings 8 (1 + e) has its smallest residual at e = 0 and rises by 10 % at
  e = +-0.1 %: that frame's clock is within about 0.05 % of nominal, which U(+-0.5 %) (the
  earlier range) gives to only 1 frame in 10. Measured: realism 0.685 -> 0.684 (no change;
  128APSK and 32QAM up, 64QAM and 4ASK at +30 dB down, within the 32-frame noise).
- Timing offset: U(0, 1 symbol) [same].
- Carrier offset: U(+-5e-5) cycles/sample and phase U(0, 2 pi) [U(+-0.0025) = 500 Hz] -- the
  real 16QAM frame has a fixed but non-zero carrier phase (25 degrees modulo 90) whose 4th-power
  estimate moves by less than 5 degrees between quarters of the frame: |offset| < ~5e-5.
- Multipath: none [echoes at 0.9 and 1.7 samples with amplitudes 0.8 and 0.3, Rayleigh] --
  real FM and GMSK frames keep a constant envelope at high SNR, which frequency-selective
  echoes would break (echoes off: realism 0.34 -> 0.40).
- Fading: flat, static within the frame (Doppler 0): Rician K U(3, 20) dB, 10 % Rayleigh, which
  the unit-power normalisation reduces to a random carrier phase [Rician K = 4, static] -- the
  constant envelope of the real FM/GMSK frames again (Doppler 1e-4 off: 0.40 -> 0.41).

Measured realism after each change (full: the benchmark, 32 frames per cell, all SNRs >= 10 dB;
quick: 48 frames per cell at 10, 16, 22 and 30 dB):

| generator | realism at SNR >= 10 dB | classes > 0.5 at +30 dB |
|---|---|---|
| prototype (RRC, bipolar ASK; ../shared/reference/README.md) | ~0.20 | - |
| before issue 7 (RC U(0.15, 0.35), echoes, Doppler, CFO 1e-3) | 0.347 full, 0.343 quick | 6 |
| + no echoes | 0.399 quick | 8 |
| + no Doppler, carrier offset <= 5e-5 | 0.409 quick | 9 |
| + link pulse fitted to the real frame | 0.493 quick | 14 |
| + GMSK BT 0.35, unipolar 4ASK/8ASK | 0.512 quick | 15 |
| + SSB frames at rms U(2, 3) | 0.553 full | 15 |
| + transmit RRC 0.35 for OOK/4ASK/8ASK | 0.586 full | 16 |
| + AM-SSB-SC with a leaked carrier (carrier-dominated like the real frames) | 0.600 full | 17 |
| + OQPSK on GNU Radio's axis-aligned 4-PSK points | 0.642 full | 18 |
| + linear-class frame level from unit mean amplitude (mean abs(s) = 1) | 0.685 full | 18 |
| + clock offset U(+-0.025 %) (the real frame's clock is within ~0.05 %) | 0.684 full | 18 |
| + AM-DSB on a real IF carrier (twin-peak spectrum), f_IF 0.026 | 0.696 full | 18 |
| + DVB-S2 ring phases for 32APSK | 0.696 full | 18 |
| + AM-DSB-SC with a leaked carrier (carrier lines like the real DSB spectra) | 0.719 full | 19 |
| + AM-SSB-WC as full-carrier SSB (ITU-R H3E: carrier = sideband peak) | 0.723 full | 19 |
| + 128APSK point by point from DVB-S2X (rate 135/180) | 0.730 full | 19 |
| + 64APSK as liquid-dsp's APSK64 (4+14+20+26) | 0.735 full | 19 |
| + cross QAMs (32, 128) at unit power (no GNU Radio constellation object) | 0.752 full | 20 |
| + 64APSK at liquid-dsp's unit power | 0.772 full | 21 |
| + DVB APSKs at their standard's unit power (one rule for all table-made ones) | 0.774 full | 21 |
| + SNR label as the RadioML generators' parameter (true SNR 2 L - 3.01 dB) | 0.811 full | 21 |
| + class level applied before the noise (no level cue where noise dominates) | 0.812 full | 21 |
| + speech level per frame (pauses, level spread) for the analog message | 0.817 full | 21 |

Tried and dropped (measured worse, no other evidence for them): the link pulse also filtering the
CPM and analog classes as a receiver filter (GMSK 0.73 -> 0.31); ASK/BPSK without carrier
phase (no change); a receiver DC blocker (GNU Radio `dc_blocker_cc`, D = 32) on every class, for
a possible over-the-air receiver (16QAM 1.0 -> 0.0, 4ASK/8ASK read as OOK); DSB messages
interpolated to the link band like symbols (8 or 16 kHz audio) or at rms 0.11-0.7, DSB-WC
with mu U(0.05, 0.2) or U(1, 2), DSB noise set from a nominal unit power (0 % each); frames
scaled to unit mean amplitude per frame instead of the constellation rule (0.60 vs 0.68 on 10,
20, 30 dB); 64APSK as DVB-S2X 8+16+20+20 or 16+16+16+16 (0.00; re-measured after the exact
128APSK with gr-dtv's 16+16+16+16 of rate 128/180, radius ratios 1.88, 2.72, 3.95: 0.00, read
as 256QAM); a Nyquist RC 0.35 link pulse re-measured with the current choices (13 linear
classes 0.68 -> 0.45); FM with the 75 us
pre-emphasis of GNU Radio's `nbfm_tx` (FM 0.82 -> 0.78), or with the 2016 WBFM deviation in
cycles/sample, 0.075-0.19 (FM 0.01, read as 256QAM); AM-DSB on a complex IF carrier (GNU Radio
`sig_source_c`; DSB-SC 0.84 -> 0.01, both read as FM/GMSK); AM-DSB and its f_IF at a 1 MS/s
message rate (both read as BPSK/OOK); DSB-WC at 100 % modulation, mu = 1 (still 0, read as
SC/OOK/256QAM); SSB-WC sideband peak U(0.1, 0.5) (WC 0.30 -> 0.24, more read as SC).
Measured from 0.730: no carrier offset at all, only the static phase, since the real frame's
drift is consistent with zero (0.730, no class moved by more than 0.03); DSB-WC frames left at
the level of GNU Radio's AM chain (carrier amplitude 1 on a real cosine: rms 0.71-0.75)
instead of unit power, as the SSB frames are not normalised (WC read as DSB-SC 99 %);
OOK/4ASK/8ASK through a matched RRC pair (Nyquist RC 0.35, no ISI at the symbol instants)
(4ASK 0.51 -> 0.35, 8ASK 0.72 -> 0.83, 4ASK read as 8ASK 65 %; 0.728). From 0.735: the rest
of liquid-dsp's APSK family, 16APSK 4+12 (2.61), 32APSK 4+12+16 (2.61, 4.50), 128APSK
8+18+24+36+42, first points on the I axis (16APSK 0.81 -> 0.87, but 32APSK 0.92 -> 0.60 and
128APSK 0.80 -> 0.49; 0.711): the real 32/128APSK are DVB-S2(X)-like; 16APSK at the ratio
of DVB-S2 code rate 3/4 (2.85), the rate of the 32APSK rings (16APSK 0.81 -> 0.75, read as
32APSK 23 %; 0.732); DSB-WC at the level the SSB frames pin for a carrier common to the AM
chains (SSB-WC rms 1.15 x carrier, DSB-WC 0.73 x: rms U(1.27, 1.91)) (read as DSB-SC 95 %;
0.735): neither a lower nor a higher level moves DSB-WC off DSB-SC. From 0.752: DSB-WC with its
carrier added after the IF mixing, 1 + mu m cos(2 pi f_IF n) (the 2016 chain adds the carrier
with `add_const_cc` after `float_to_complex`; a real `sig_source_f` IF must come before it) (0,
read as GMSK 28 %, 64QAM 22 %, FM 17 %); liquid-dsp's 16/32/128APSK again, now at liquid's own
unit power (16APSK 0.97, 32APSK 0.58, read as 32QAM 33 %, 128APSK 0.69; 0.772 -> 0.760). From
0.774: the SSB message peak-normalised on the real audio, as a chain normalises its audio input
(GNU Radio's 2016 chain, liquid-dsp's `ampmodem`), so the analytic envelope peaks 1.03-1.37 x
higher (SSB-WC 0.41 -> 0.26, read as 8ASK 53 %; SSB-SC 0.73 -> 0.67; 0.765); the square QAMs
at unit power too, as if every QAM came from liquid-dsp's tables (64QAM 0.40 -> 0.46, 16QAM
0.90 -> 0.93, but 256QAM 0.82 -> 0.59; 0.768): the square QAMs keep GNU Radio's rule; the
three keyed classes as a carrier keyed without any pulse filter, each level held for its symbol
(GNU Radio `chunks_to_symbols` followed by `repeat`, the plainest keyed chain) (OOK 1.00, 4ASK
0.51 -> 0.28, read as 8ASK 68 %, 8ASK 0.72 -> 0.62; 0.760): crisper levels read as more
levels; SSB frames left at their chain's own level instead of rms U(2, 3) (not normalised:
carrier 1 for WC, the leaked carrier for SC, sideband envelope peak 1; rms 0.55-1.5 and 1.3-3.6
with the fade) (SSB-WC 0.41 -> 0.01, read as 8ASK and 128QAM 32 % each; SSB-SC 0.73 -> 0.45;
0.746); the three keyed classes keyed onto the AM chains' real IF carrier (cos at f_IF, as
AM-DSB: an amplitude-keyed carrier built like the AM chain) (4ASK 0.11, 8ASK 0.00, both read as
OOK ~90 %; 0.727): real-valued signals that change sign are OOK to the judge (as bipolar PAM
and a true DSB-SC were); M-ASK levels {1..M} with no zero level (levels symmetric about a
non-zero mean, OOK keeping {0, 1}; frame rms 1.10 / 1.12) (4ASK 0.01, 8ASK 0.25, both read as
256QAM; 0.733): the zero level is essential; the keyed classes' RRC roll-off drawn per frame
from U(0.1, 0.4), the range the 2018 paper states, instead of GNU Radio's default 0.35 (4ASK
0.51 -> 0.50, +30 dB 0.41 -> 0.38; 8ASK 0.72 -> 0.72, +30 dB 0.59 -> 0.69; 0.773): no
measurable change, the default stays. From 0.814, with the RadioML SNR label: oscillator phase
noise as GNU Radio's `phase_noise_gen` (single-pole IIR, alpha 0.1; 0.015 rad rms, the most the
real 16QAM frame allows) (no change); SSB through `hilbert_fc(401)` with the carrier added
before it, the 2016 chain (SSB-WC 0.34 -> 0.38 at +30 dB, nothing else); speech band-limited to
100-8000 Hz like the 2016 podcast (no change); SSB on the upper or the lower sideband at random
(no change); broadcast-style limited audio (tanh, gain 4) for the with-carrier classes (SSB-WC
0.34 -> 0.09); the WC and SC labels swapped, WC frames truly suppressed-carrier (SSB-WC -> 0.16,
DSB-WC read as 256QAM or OOK); a music-like analog source (SSB-SC 0.77 -> 0.95, DSB-SC 0.69 ->
0.86, but SSB-WC 0.34 -> 0.24; 0.824): the target classes do not move and the 2018 source is not
published, speech stays (the 2016 generator's); unscrambled ASCII text as the bit source, for
every linear class (4ASK +30 dB 0.41 -> 0.84, but 256QAM -0.43, 16QAM -0.24 at SNR >= 10 dB;
0.783) or for OOK/4ASK/8ASK only (4ASK +30 dB 0.41 -> 0.78, 8ASK 0.76 -> 0.90; 0.834): not
adopted, since the keyed-only variant was chosen after seeing the all-class result, nothing says
the 2018 generator fed the keyed classes another source, and the 2016 generator scrambled its
text (`randomize=True`), which removes the effect (4ASK 0.28). From 0.812, for the WC
classes: DSB-WC on a complex IF (the 2016 chain's `sig_source_c` with its non-zero frequency)
while DSB-SC stays on the real IF (DSB-WC 0, read as GMSK/64QAM/32APSK); the WC carrier from its
own free-running oscillator, own phase and an offset U(+-0.0025) cycles/sample (DSB-WC 0, read
as DSB-SC 71 %); SSB-WC from a Weaver modulator, carrier at the sideband's centre (SSB-WC +0.05,
noise); SSB carrier at the audio band's centre, -1750 Hz (SSB-WC 0.33 -> 0.07, read as 8ASK);
both SSB classes on the AM chains' IF (SSB-SC 0.78 -> 0.01; 0.773). From 0.817 (speech levels
in place), a true SC again, since the earlier measurement predates the label convention and
the speech levels: SSB-SC 0.92 -> 0.38 (read as 8ASK 46 %; 0.795), DSB-SC 0.40 -> 0.29 (read as
OOK 43 %; 0.813): the leaked carriers stay.
Still unsolved (SNR >= 10 dB / +30 dB): AM-SSB-WC (0.15 / 0.34, read as SSB-SC 81 %), AM-DSB-SC
(0.40 / 0.47, read as DSB-WC 57 %), 4ASK (0.41 / 0.41, read as 8ASK 57 %; best near labels 4-6,
where the judge also calls 8ASK 4ASK: a bias of the judge at low SNR, not a sign of what real
4ASK has), 64QAM (0.57 / 0.75, read as 256QAM);
every crisper-level 4ASK variant, NRZ or a matched RRC, moves it further to 8ASK, and the zero
level is needed; the analog level, message and IF are not published. Before the speech level
model no DSB-WC variant (index 0.05-2, levels 0.7-1.9, baseband, complex or real IF, carrier
before or after the IF, labels swapped) was read as DSB-WC: the judge takes a nearly unmodulated
carrier on the real IF for DSB-WC, which a fully modulated frame never is.

The channel is y = fade(t) * e^{j(2 pi f_c n + phi)} * resample(h_mp * x) + w: a static short
multipath filter (echo delays quantised to 0.05 sample; none in rml2018), a clock offset as
fractional resampling, and a flat, slowly varying Rician fade common to all paths (a product
model: scatterers near the receiver), then the carrier offset and the noise.

Determinism
-----------
The frames of chunk c (CELL_CHUNK_FRAMES frames) of cell (class, SNR) come from
`SeedSequence([seed, layout tag, class index in the full class list, snr_db + 1000, c])`, so any
cell can be regenerated alone (`cell_frames`) and a file with a subset of classes or SNRs holds the
same frames for them as the full file. The same seed gives byte-identical X/Y/Z.
"""

from __future__ import annotations

import argparse
import math
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from flows.errors import ToolchainError
from flows.fileio import atomic_path
from flows.rml_formats import (
    RML2016_CLASSES,
    RML2016_FRAME_LEN,
    RML2016_FRAMES_PER_CELL,
    RML2016_SNRS_DB,
    RML2018_CLASSES,
    RML2018_DATASETS,
    RML2018_FRAME_LEN,
    RML2018_FRAMES_PER_CELL,
    RML2018_SNRS_DB,
    rml2018_row,
)

CELL_CHUNK_FRAMES = 256  # frames generated per RNG chunk; part of the seed -> frames mapping
ROLLOFF_STEPS = 21  # the roll-off is drawn from this many evenly spaced values (pulse table)
ECHO_DELAY_STEP = 0.05  # echo delays are quantised to this many samples (phase-ramp table)
_PAD_SYMBOLS = 16  # symbols generated beyond each frame edge: RC tails and filter wrap-around
_SOS_PATHS = 8  # sinusoids in the sum-of-sinusoids fading process
_FADE_KNOTS = 17  # the fade is computed at this many points per frame and linearly interpolated


# ---------------------------------------------------------------- physics and class records

@dataclass(frozen=True)
class Physics:
    """The physical choices of one layout's generator; the module docstring says why."""

    sps: int  # samples per symbol, nominal (before the sample-rate offset)
    pulse: str  # "rc" raised cosine (whole-link Nyquist pulse) or "rrc" root raised cosine
    rolloff_range: tuple[float, float]  # pulse roll-off, uniform per frame
    sample_rate_offset_max: float  # |relative clock offset| between transmitter and receiver
    cfo_max_cycles_per_sample: float  # |carrier frequency offset|, uniform per frame
    rician_k_db_range: tuple[float, float]  # K factor of the flat fade, uniform per frame
    rayleigh_fraction: float  # fraction of frames with a Rayleigh (K = 0) fade instead
    doppler_max_cycles_per_sample: float  # Doppler of the flat fade, uniform in [0, max]
    echo_delays_samples: tuple[tuple[float, float], ...]  # per echo: delay range in samples
    echo_power_db: tuple[tuple[float, float], ...]  # per echo: mean power range vs direct path
    fs_hz: float  # sample rate assumed only to scale the analog (speech-like) message
    pitch_hz: tuple[float, float]  # glottal pitch of the message, uniform per frame
    formants_hz: tuple[tuple[float, float], ...]  # formant centre ranges, uniform per frame
    formant_bandwidths_hz: tuple[float, ...]  # -3 dB width of each formant resonance
    formant_gains: tuple[float, ...]  # relative amplitude of each formant (spectral tilt)
    voiced_fraction_range: tuple[float, float]  # share of the source power that is voiced
    audio_band_hz: tuple[float, float]  # the message is band-limited to this band
    am_index_range: tuple[float, float]  # AM-DSB-WC modulation index (message peak 1)
    ssb_sideband_range: tuple[float, float]  # AM-SSB-WC sideband envelope peak, carrier 1
    ssb_residual_carrier_range: tuple[float, float]  # AM-SSB-SC carrier / sideband peak
    fm_deviation_hz_range: tuple[float, float]  # FM peak frequency deviation (message peak 1)
    normalisation: str  # "power": mean |x|^2 = 1 (2018); "l1": sum |x| = 1 (2016)
    # frequency where the link pulse's amplitude response is 1/2, over half the symbol rate
    # (1/(2 sps)): 1.0 is a Nyquist (ISI-free) raised cosine; below 1 the link is narrower
    pulse_half_amplitude_ratio: float = 1.0
    # AM-DSB on a real intermediate-frequency carrier cos(2 pi f n + phase), cycles/sample; 0
    # keeps the AM signal at baseband (complex envelope 1 + mu m, no IF)
    am_if_cycles_per_sample: float = 0.0
    # AM-DSB-SC leaked carrier / message peak, uniform per frame; (0, 0) is a true SC
    dsb_residual_carrier_range: tuple[float, float] = (0.0, 0.0)
    # speech level per frame (module docstring): share of frames in active speech, the active
    # frames' message peak against the recording's peak (dB, uniform), the pauses' level (dB)
    speech_activity: float = 1.0
    speech_level_db_range: tuple[float, float] = (0.0, 0.0)
    speech_pause_db: float = -40.0
    # what a frame's SNR label means (module docstring): "radioml", the RadioML generators'
    # parameter (true SNR 2 L - 3.01 dB), or "true" (the label is the true per-sample SNR)
    snr_label: str = "radioml"


@dataclass(frozen=True)
class Modulation:
    """How one class is transmitted: the modulator kind and its parameters."""

    kind: str  # a key of _MODULATORS
    points: np.ndarray | None = field(default=None, compare=False, repr=False)  # linear kinds
    h: float = 0.0  # CPM modulation index
    bt: float = 0.0  # CPM Gaussian BT product; 0 for a rectangular frequency pulse (CPFSK)
    carrier: bool = False  # analog: transmitted (with) carrier
    # rms of the stored frame, uniform per frame ("power" normalisation only): 1 for the
    # digital classes; the real SSB frames are louder (see the module docstring)
    frame_rms: tuple[float, float] = (1.0, 1.0)
    # transmit pulse of this class instead of the layout's link pulse: (kind "rc"/"rrc",
    # roll-off, half-amplitude ratio); None keeps the link pulse (see the module docstring)
    pulse: tuple[str, float, float] | None = None

    def physics(self, phys: Physics) -> Physics:
        """The physics this class's modulator uses: the layout's, with its own pulse if any."""
        if self.pulse is None:
            return phys
        kind, rolloff, ratio = self.pulse
        return replace(phys, pulse=kind, rolloff_range=(rolloff, rolloff),
                       pulse_half_amplitude_ratio=ratio)


@dataclass(frozen=True)
class Layout:
    """A file layout: its classes, SNR grid, frame length, modulations and physics."""

    name: str
    classes: tuple[str, ...]
    snrs_db: tuple[int, ...]
    frame_len: int
    real_frames_per_cell: int  # frames per cell in the real file
    modulations: Mapping[str, Modulation]
    physics: Physics
    seed_tag: int  # mixed into every cell's SeedSequence: the layouts never share frames


def _unit_power(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.complex128)
    return points / np.sqrt(np.mean(np.abs(points) ** 2))


def psk_points(m: int, offset_rad: float = 0.0) -> np.ndarray:
    """M-PSK on the unit circle, first point at `offset_rad`."""
    return np.exp(1j * (2 * np.pi * np.arange(m) / m + offset_rad))


def pam_points(m: int, unipolar: bool = False) -> np.ndarray:
    """Real M-ASK levels, unit mean power: unipolar {0..M-1} or bipolar {-(M-1)..M-1, step 2}."""
    levels = np.arange(m, dtype=float) if unipolar else 2.0 * np.arange(m) - (m - 1)
    return _unit_power(levels)


def qam_points(m: int) -> np.ndarray:
    """Square QAM for M = 4^k, cross QAM for M = 2 * 4^k (32: 6x6, 128: 12x12, corners removed)."""
    k = round(math.log2(m))
    if 2 ** k != m or m < 16:
        raise ValueError(f"QAM order {m} is not a power of 2 >= 16")
    if k % 2 == 0:
        side = 2 ** (k // 2)
        grid = 2.0 * np.arange(side) - (side - 1)
        points = (grid[:, None] + 1j * grid[None, :]).ravel()
    else:
        side = 6 * 2 ** ((k - 5) // 2)  # 32 -> 6, 128 -> 12, 512 -> 24
        corner = side // 6  # each removed corner is corner x corner points
        grid = 2.0 * np.arange(side) - (side - 1)
        i, q = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
        edge_i = (i < corner) | (i >= side - corner)
        edge_q = (q < corner) | (q >= side - corner)
        keep = ~(edge_i & edge_q)
        points = (grid[i[keep]] + 1j * grid[q[keep]])
    assert points.size == m
    return _unit_power(points)


def apsk_points(ring_sizes: Sequence[int], radii: Sequence[float],
                offsets: Sequence[float] | None = None) -> np.ndarray:
    """Concentric PSK rings: ring i has ring_sizes[i] points at angles 2 pi (k + o_i) / n_i.

    `offsets` o_i are in units of the ring's point spacing; the default 1/2 for every ring puts
    the first point half a spacing off the I axis (DVB-S2: pi/4 on the 4-ring, pi/12 on the
    12-ring). DVB-S2's 32APSK outer 16-ring starts on the axis (o = 0).
    """
    offsets = [0.5] * len(ring_sizes) if offsets is None else offsets
    rings = [r * np.exp(2j * np.pi * (np.arange(n) + o) / n)
             for n, r, o in zip(ring_sizes, radii, offsets)]
    return _unit_power(np.concatenate(rings))


# DVB-S2X 128APSK (EN 302 307-2, code rate 135/180; as in GNU Radio's gr-dtv modulator): ring
# radii relative to the inner ring, and the first-quadrant points as (ring, angle / pi); the
# other quadrants mirror them (theta, pi - theta, -theta, pi + theta). Rings 4 and 5 (2.681,
# 2.75) are nearly the same circle, so their points sit at different angles.
DVBS2X_128APSK_RADII = (1.0, 1.715, 2.118, 2.681, 2.75, 3.819)
DVBS2X_128APSK_QUADRANT = (
    (0, 83 / 1260), (5, 11 / 105), (5, 37 / 1680), (5, 11 / 168), (1, 121 / 2520),
    (2, 23 / 280), (4, 19 / 720), (3, 61 / 720), (0, 103 / 560), (5, 61 / 420),
    (5, 383 / 1680), (5, 929 / 5040), (1, 113 / 560), (2, 169 / 1008), (4, 563 / 2520),
    (3, 139 / 840), (0, 243 / 560), (5, 1993 / 5040), (5, 43 / 90), (5, 73 / 168),
    (1, 1139 / 2520), (2, 117 / 280), (4, 341 / 720), (3, 349 / 840), (0, 177 / 560),
    (5, 1789 / 5040), (5, 49 / 180), (5, 53 / 168), (1, 167 / 560), (2, 239 / 720),
    (4, 199 / 720), (3, 281 / 840),
)


# liquid-dsp's APSK64 (modem_apsk_const.c): rings 4+14+20+26 at these radii (unit mean power,
# as liquid's modems emit it), every ring's first point on the I axis. None of the three DVB-S2X
# 64APSK (4+12+20+28, 8+16+20+20, 16+16+16+16) is read as 64APSK by the real-data VGG10.
LIQUID_APSK64 = ((4, 14, 20, 26), (0.18916586, 0.52466476, 0.88613129, 1.30529201), (0, 0, 0, 0))


def dvbs2x_128apsk_points() -> np.ndarray:
    """DVB-S2X 128APSK (16+16+16+16+16+48 rings, rate 135/180), unit mean power."""
    ring, angle = np.array(DVBS2X_128APSK_QUADRANT).T
    quadrant = np.array(DVBS2X_128APSK_RADII)[ring.astype(int)] * np.exp(1j * np.pi * angle)
    return _unit_power(np.concatenate([quadrant, -quadrant.conj(), quadrant.conj(), -quadrant]))


def mean_amplitude_rms(points: np.ndarray) -> float:
    """rms of a constellation scaled to unit mean amplitude (mean |s| = 1): sqrt(E|s|^2) / E|s|.

    The level of a linear class's frame (module docstring: frame level): 1 for PSK, about 1.06
    for QAM and APSK, sqrt(2) for OOK.
    """
    magnitude = np.abs(np.asarray(points))
    return float(np.sqrt(np.mean(magnitude ** 2)) / np.mean(magnitude))


def _linear(points: np.ndarray, pulse: tuple[str, float, float] | None = None) -> Modulation:
    rms = mean_amplitude_rms(points)
    return Modulation("linear", points=points, pulse=pulse, frame_rms=(rms, rms))


def _unit_power_linear(points: np.ndarray) -> Modulation:
    """A linear class whose frames stay at unit power: a constellation table made outside GNU
    Radio's (mean-amplitude normalising) constellation objects (module docstring)."""
    return Modulation("linear", points=points)


_AM_2018 = dict(fs_hz=100e3, pitch_hz=(100.0, 250.0),
                formants_hz=((300.0, 900.0), (900.0, 2500.0), (2500.0, 3500.0)),
                formant_bandwidths_hz=(80.0, 120.0, 200.0), formant_gains=(1.0, 0.5, 0.25),
                voiced_fraction_range=(0.3, 1.0), speech_activity=0.6,
                speech_level_db_range=(-20.0, 0.0), speech_pause_db=-40.0)

RML2018_PHYSICS = Physics(
    sps=8, pulse="rc", rolloff_range=(0.417, 0.417), pulse_half_amplitude_ratio=0.915,
    sample_rate_offset_max=2.5e-4, cfo_max_cycles_per_sample=5e-5,
    rician_k_db_range=(3.0, 20.0), rayleigh_fraction=0.1, doppler_max_cycles_per_sample=0.0,
    echo_delays_samples=(), echo_power_db=(), audio_band_hz=(100.0, 3400.0),
    am_index_range=(0.3, 0.8), ssb_sideband_range=(1.0, 1.0),
    ssb_residual_carrier_range=(1.1, 3.3), fm_deviation_hz_range=(2.5e3, 5e3),
    am_if_cycles_per_sample=0.026, dsb_residual_carrier_range=(1.1, 3.3),
    normalisation="power", **_AM_2018,
)

RML2016_PHYSICS = Physics(
    sps=8, pulse="rrc", rolloff_range=(0.35, 0.35), sample_rate_offset_max=2.5e-4,
    cfo_max_cycles_per_sample=0.0025, rician_k_db_range=(10 * math.log10(4), 10 * math.log10(4)),
    rayleigh_fraction=0.0, doppler_max_cycles_per_sample=0.0,
    echo_delays_samples=((0.9, 0.9), (1.7, 1.7)),
    echo_power_db=((20 * math.log10(0.8),) * 2, (20 * math.log10(0.3),) * 2),
    audio_band_hz=(100.0, 8000.0), am_index_range=(0.2, 0.5), ssb_sideband_range=(0.3, 0.9),
    ssb_residual_carrier_range=(0.0, 0.0), fm_deviation_hz_range=(15e3, 37.5e3),
    normalisation="l1", **{**_AM_2018, "fs_hz": 200e3},
)

# Real +30 dB SSB frames exceed the [-2, 2] range that holds 98.3 % of the other classes' samples
# while looking carrier-dominated (a near-constant envelope): their rms is above 2, so the real
# generator did not bring them to unit power. Drawn just above that bound.
SSB_FRAME_RMS = (2.0, 3.0)

# The amplitude-keyed classes look transmit-filtered only: a root raised cosine, roll-off 0.35
# (GNU Radio's generic_mod default excess bandwidth), Nyquist at 8 samples/symbol, without the
# narrower receive-side response of the other linear classes (module docstring).
ASK_PULSE = ("rrc", 0.35, 1.0)

RML2018_MODULATIONS: dict[str, Modulation] = {
    "OOK": _linear(pam_points(2, unipolar=True), ASK_PULSE),
    "4ASK": _linear(pam_points(4, unipolar=True), ASK_PULSE),
    "8ASK": _linear(pam_points(8, unipolar=True), ASK_PULSE),
    "BPSK": _linear(psk_points(2)),
    "QPSK": _linear(psk_points(4, np.pi / 4)),
    "8PSK": _linear(psk_points(8)),
    "16PSK": _linear(psk_points(16)),
    "32PSK": _linear(psk_points(32)),
    "16APSK": _unit_power_linear(apsk_points((4, 12), (1.0, 2.75))),
    "32APSK": _unit_power_linear(apsk_points((4, 12, 16), (1.0, 2.84, 5.27), (0.5, 0.5, 0.0))),
    "64APSK": _unit_power_linear(apsk_points(*LIQUID_APSK64)),  # liquid-dsp's: module docstring
    "128APSK": _unit_power_linear(dvbs2x_128apsk_points()),  # APSK levels: module docstring
    "16QAM": _linear(qam_points(16)),
    "32QAM": _unit_power_linear(qam_points(32)),  # cross QAM: module docstring
    "64QAM": _linear(qam_points(64)),
    "128QAM": _unit_power_linear(qam_points(128)),  # cross QAM: module docstring
    "256QAM": _linear(qam_points(256)),
    "AM-SSB-WC": Modulation("ssb", carrier=True, frame_rms=SSB_FRAME_RMS),
    "AM-SSB-SC": Modulation("ssb", carrier=False, frame_rms=SSB_FRAME_RMS),
    "AM-DSB-WC": Modulation("dsb", carrier=True),
    "AM-DSB-SC": Modulation("dsb", carrier=False),
    "FM": Modulation("fm"),
    "GMSK": Modulation("cpm", h=0.5, bt=0.35),
    "OQPSK": Modulation("oqpsk", points=psk_points(4)),  # axis points: module docstring
}

RML2016_MODULATIONS: dict[str, Modulation] = {
    "8PSK": _linear(psk_points(8)),
    "AM-DSB": Modulation("dsb", carrier=True),
    "AM-SSB": Modulation("ssb", carrier=False),
    "BPSK": _linear(psk_points(2)),
    "CPFSK": Modulation("cpm", h=0.5, bt=0.0),
    "GFSK": Modulation("cpm", h=0.1 * 8 / np.pi, bt=0.35),  # 0.1 rad/sample at 8 samples/symbol
    "PAM4": _linear(pam_points(4)),
    "QAM16": _linear(qam_points(16)),
    "QAM64": _linear(qam_points(64)),
    "QPSK": _linear(psk_points(4, np.pi / 4)),
    "WBFM": Modulation("fm"),
}

LAYOUTS: dict[str, Layout] = {
    "rml2018": Layout("rml2018", RML2018_CLASSES, RML2018_SNRS_DB, RML2018_FRAME_LEN,
                      RML2018_FRAMES_PER_CELL, RML2018_MODULATIONS, RML2018_PHYSICS, seed_tag=1),
    "rml2016": Layout("rml2016", RML2016_CLASSES, RML2016_SNRS_DB, RML2016_FRAME_LEN,
                      RML2016_FRAMES_PER_CELL, RML2016_MODULATIONS, RML2016_PHYSICS, seed_tag=2),
}
assert all(set(lay.modulations) == set(lay.classes) for lay in LAYOUTS.values())


# ---------------------------------------------------------------- cached tables

def _fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n (a fast FFT size)."""
    best = 2 ** math.ceil(math.log2(n))
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


@lru_cache(maxsize=None)
def _gen_length(frame_len: int, phys: Physics) -> int:
    """Samples generated per frame: the frame, its clock-offset stretch, one symbol, two pads."""
    need = (frame_len - 1) * (1 + phys.sample_rate_offset_max) + phys.sps + 4
    need += 2 * _PAD_SYMBOLS * phys.sps
    return phys.sps * _fast_len(math.ceil(need / phys.sps))


@dataclass(frozen=True)
class _Tables:
    """Per (generated length, physics) constants of the DFT-domain shaping and multipath."""

    band: np.ndarray  # DFT bins where any pulse of the roll-off range is non-zero
    pulses: np.ndarray  # (roll-offs, bins in band) float32 pulse responses, p(0) = 1 for RC
    delays_full: np.ndarray  # (echo delays, lg) complex64 exp(-j 2 pi f d), d on the step grid
    delays_band: np.ndarray  # the same on the band bins only


@lru_cache(maxsize=None)
def _tables(lg: int, phys: Physics) -> _Tables:
    lo, hi = phys.rolloff_range
    rolloffs = np.linspace(lo, hi, ROLLOFF_STEPS) if hi > lo else np.array([lo])
    freq = np.fft.fftfreq(lg)
    half = phys.pulse_half_amplitude_ratio / (2 * phys.sps)  # where the RC response is 1/2
    band = np.flatnonzero(np.abs(freq) < (1 + hi) * half)
    f, beta = np.abs(freq[band])[None, :], rolloffs[:, None]
    f1, f2 = (1 - beta) * half, (1 + beta) * half
    ramp = 0.5 * (1 + np.cos(np.pi * np.clip((f - f1) / (f2 - f1), 0.0, 1.0)))
    rc = np.where(f <= f1, 1.0, np.where(f >= f2, 0.0, ramp))
    if phys.pulse not in ("rc", "rrc"):
        raise ValueError(f"unknown pulse {phys.pulse!r}")
    pulses = phys.sps * (rc if phys.pulse == "rc" else np.sqrt(rc))
    max_delay = max((d for _, d in phys.echo_delays_samples), default=0.0)
    delays = np.arange(round(max_delay / ECHO_DELAY_STEP) + 1) * ECHO_DELAY_STEP
    delays_full = np.exp(-2j * np.pi * delays[:, None] * freq[None, :]).astype(np.complex64)
    return _Tables(band, pulses.astype(np.float32), delays_full, delays_full[:, band])


@lru_cache(maxsize=None)
def _knot_weights(frame_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(left knot index, weight of the right knot) of each sample, for linear interpolation."""
    position = np.arange(frame_len) * (_FADE_KNOTS - 1) / max(frame_len - 1, 1)
    left = np.minimum(np.floor(position).astype(np.intp), _FADE_KNOTS - 2)
    return left, (position - left).astype(np.float32)


@lru_cache(maxsize=None)
def _frequency_pulse(bt: float, sps: int) -> np.ndarray:
    """CPM frequency pulse as (span symbols, sps) polyphase taps summing to 1.

    bt = 0: rectangular over one symbol (CPFSK); otherwise a Gaussian of bandwidth-time product
    `bt` convolved with a one-symbol rectangle (GMSK/GFSK), truncated to 4 symbols.
    """
    if bt == 0:
        return np.full((1, sps), 1.0 / sps)
    span = 4
    t = (np.arange(span * sps) - (span * sps - 1) / 2) / sps  # in symbols, centred
    sigma = math.sqrt(math.log(2)) / (2 * math.pi * bt)
    gauss = np.exp(-0.5 * (t / sigma) ** 2)
    taps = np.convolve(gauss, np.ones(sps), mode="same")
    return (taps / taps.sum()).reshape(span, sps)


# ---------------------------------------------------------------- channel draws

@dataclass(frozen=True)
class _Echoes:
    """Static echoes of a batch of frames: the response is 1 + sum_k c_k exp(-j 2 pi f d_k)."""

    steps: np.ndarray  # (n, echoes) delay d_k as an index on the ECHO_DELAY_STEP grid
    gains: np.ndarray  # (n, echoes) complex64 c_k, Rayleigh

    @staticmethod
    def draw(n: int, rng: np.random.Generator, phys: Physics) -> _Echoes:
        steps, gains = [], []
        for (d_lo, d_hi), (p_lo, p_hi) in zip(phys.echo_delays_samples, phys.echo_power_db):
            steps.append(np.rint(rng.uniform(d_lo, d_hi, n) / ECHO_DELAY_STEP))
            power = 10 ** (rng.uniform(p_lo, p_hi, n) / 10)
            rayleigh = rng.standard_normal(n) + 1j * rng.standard_normal(n)
            gains.append(np.sqrt(power / 2) * rayleigh)
        if not steps:
            return _Echoes(np.zeros((n, 0), np.intp), np.zeros((n, 0), np.complex64))
        return _Echoes(np.stack(steps, axis=1).astype(np.intp),
                       np.stack(gains, axis=1).astype(np.complex64))

    def response(self, table: np.ndarray) -> np.ndarray:
        """(n, bins) response on the bins of `table` (a _Tables.delays_* array)."""
        h = np.ones((len(self.steps), table.shape[1]), dtype=np.complex64)
        for k in range(self.steps.shape[1]):
            h += self.gains[:, k, None] * table[self.steps[:, k]]
        return h


def _filter(x: np.ndarray, echoes: _Echoes | None, phys: Physics) -> np.ndarray:
    """Circular filtering by the echoes (the wrap-around lands in the pads); complex64."""
    x = x.astype(np.complex64, copy=False)
    if echoes is None or echoes.steps.shape[1] == 0:
        return x
    table = _tables(x.shape[1], phys).delays_full
    return np.fft.ifft(np.fft.fft(x, axis=1) * echoes.response(table), axis=1)


# ---------------------------------------------------------------- modulators

_MODULATORS: dict[str, Callable[..., np.ndarray]] = {}


def _modulator(kind: str):
    """Register a modulator: (mod, n, lg, rng, phys, echoes) -> complex64 baseband (n, lg)."""
    def register(fn):
        _MODULATORS[kind] = fn
        return fn
    return register


def _shape(symbol_spectra: Sequence[np.ndarray], rails: Sequence[np.ndarray], n: int, lg: int,
           rng: np.random.Generator, phys: Physics, echoes: _Echoes | None) -> np.ndarray:
    """Pulse-shape symbol streams in the DFT domain, on the pulse's band only.

    Zero-stuffing a stream to `sps` samples per symbol tiles its DFT, so bin k of the shaped
    signal is S[k mod nsym] * P[k]; `rails` are per-bin factors for each stream (e.g. j and a
    half-symbol delay for the OQPSK quadrature rail).
    """
    tab = _tables(lg, phys)
    pulse = tab.pulses[rng.integers(0, len(tab.pulses), n)]
    nsym = lg // phys.sps
    spectrum = np.zeros((n, lg), dtype=np.complex64)
    band = sum(s[:, tab.band % nsym] * rail for s, rail in zip(symbol_spectra, rails)) * pulse
    if echoes is not None and echoes.steps.shape[1]:
        band *= echoes.response(tab.delays_band)
    spectrum[:, tab.band] = band
    return np.fft.ifft(spectrum, axis=1)


@_modulator("linear")
def _mod_linear(mod, n, lg, rng, phys, echoes):
    """Random symbols from the constellation, pulse-shaped."""
    points = mod.points.astype(np.complex64)
    symbols = points[rng.integers(0, len(points), (n, lg // phys.sps))]
    return _shape([np.fft.fft(symbols, axis=1)], [1.0], n, lg, rng, phys, echoes)


@_modulator("oqpsk")
def _mod_oqpsk(mod, n, lg, rng, phys, echoes):
    """QPSK with the quadrature rail delayed by half a symbol."""
    points = mod.points.astype(np.complex64)
    symbols = points[rng.integers(0, len(points), (n, lg // phys.sps))]
    band = _tables(lg, phys).band
    delayed_j = (1j * np.exp(-1j * np.pi * phys.sps * np.fft.fftfreq(lg)[band])).astype(
        np.complex64)
    spectra = [np.fft.fft(symbols.real, axis=1), np.fft.fft(symbols.imag, axis=1)]
    return _shape(spectra, [1.0, delayed_j], n, lg, rng, phys, echoes)


def _unit_phasor(phase: np.ndarray) -> np.ndarray:
    """exp(j phase) as complex64, from float32 cos and sin of the phase wrapped to [0, 2 pi)."""
    phase = np.mod(phase, 2 * np.pi).astype(np.float32)
    out = np.empty(phase.shape, dtype=np.complex64)
    np.cos(phase, out=out.real)
    np.sin(phase, out=out.imag)
    return out


@_modulator("cpm")
def _mod_cpm(mod, n, lg, rng, phys, echoes):
    """Binary CPM: phase = pi h * cumulative sum of the pulse-shaped +-1 symbols."""
    taps = _frequency_pulse(mod.bt, phys.sps)
    span, nsym = taps.shape[0], lg // phys.sps
    bits = rng.integers(0, 2, (n, nsym + span - 1)) * 2.0 - 1.0
    freq = np.zeros((n, nsym, phys.sps))
    for j in range(span):  # polyphase: sample p of symbol k sees bit k - j through taps[j, p]
        freq += bits[:, span - 1 - j: span - 1 - j + nsym, None] * taps[j]
    return _filter(_unit_phasor(np.pi * mod.h * np.cumsum(freq.reshape(n, lg), axis=1)),
                   echoes, phys)


def speech_message(n: int, lg: int, rng: np.random.Generator, phys: Physics) -> np.ndarray:
    """Analytic speech-like message (n, lg): Re is the message, Im its Hilbert transform.

    Source: a sawtooth at the pitch (harmonics falling 6 dB/octave, like a glottal pulse train)
    mixed with white noise (the unvoiced part); filter: three formant resonances (Lorentzian
    peaks) and the audio band limit (no DC). Not normalised.
    """
    fs = phys.fs_hz
    voiced = rng.uniform(*phys.voiced_fraction_range, (n, 1))
    pitch = rng.uniform(*phys.pitch_hz, (n, 1)) / fs
    saw = (np.arange(lg) * pitch + rng.random((n, 1))) % 1.0 - 0.5
    source = (np.sqrt(12 * voiced) * saw).astype(np.float32)
    source += np.sqrt(1 - voiced, dtype=np.float32) * rng.standard_normal((n, lg), np.float32)
    f = np.fft.rfftfreq(lg) * fs
    envelope = np.zeros((n, f.size), dtype=np.float32)
    for (lo, hi), width, gain in zip(phys.formants_hz, phys.formant_bandwidths_hz,
                                     phys.formant_gains):
        centre = rng.uniform(lo, hi, (n, 1))
        envelope += gain / (1 + ((f - centre) / (width / 2)) ** 2)
    envelope *= (f >= phys.audio_band_hz[0]) & (f <= phys.audio_band_hz[1]) & (f < fs / 2)
    one_sided = np.zeros((n, lg), dtype=np.complex64)
    one_sided[:, :f.size] = 2 * np.fft.rfft(source, axis=1) * envelope
    return np.fft.ifft(one_sided, axis=1)


def _peak_normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.max(np.abs(x), axis=1, keepdims=True), 1e-30)


def _speech_level(n: int, rng: np.random.Generator, phys: Physics) -> np.ndarray:
    """(n, 1) float32: each frame's message peak against the whole recording's peak."""
    if phys.speech_activity == 1.0 and phys.speech_level_db_range == (0.0, 0.0):
        return np.ones((n, 1), dtype=np.float32)
    level_db = rng.uniform(*phys.speech_level_db_range, (n, 1))
    level_db[rng.random((n, 1)) >= phys.speech_activity] = phys.speech_pause_db
    return (10 ** (level_db / 20)).astype(np.float32)


def _message(n: int, lg: int, rng: np.random.Generator, phys: Physics,
             real: bool = False) -> np.ndarray:
    """The speech-like message at its frame's level, peak <= 1: real, or analytic (SSB)."""
    message = speech_message(n, lg, rng, phys)
    return _peak_normalised(message.real if real else message) * _speech_level(n, rng, phys)


@_modulator("dsb")
def _mod_dsb(mod, n, lg, rng, phys, echoes):
    """AM-DSB: 1 + mu m (with carrier) or c + m (suppressed carrier, leaked carrier c, 0 for a
    true SC); m real, peak <= 1 (the recording's peak); optionally on a real IF carrier
    cos(2 pi f_IF n + phase), still a real signal (twin spectra at +-f_IF)."""
    index = rng.uniform(*phys.am_index_range, (n, 1)).astype(np.float32)
    message = _message(n, lg, rng, phys, real=True)
    if mod.carrier:
        am = 1 + index * message
    else:
        am = rng.uniform(*phys.dsb_residual_carrier_range, (n, 1)).astype(np.float32) + message
    if phys.am_if_cycles_per_sample:
        phase = rng.uniform(0, 2 * np.pi, (n, 1))
        carrier = np.cos(np.mod(2 * np.pi * phys.am_if_cycles_per_sample * np.arange(lg) + phase,
                                2 * np.pi)).astype(np.float32)
        am = am * carrier
    return _filter(am, echoes, phys)


@_modulator("ssb")
def _mod_ssb(mod, n, lg, rng, phys, echoes):
    """AM-SSB, upper sideband: carrier + sideband * analytic message (envelope peak <= 1)."""
    if mod.carrier:
        carrier, sideband = 1.0, rng.uniform(*phys.ssb_sideband_range, (n, 1))
    else:
        carrier, sideband = rng.uniform(*phys.ssb_residual_carrier_range, (n, 1)), 1.0
    message = _message(n, lg, rng, phys)
    return _filter(carrier + sideband * message, echoes, phys)


@_modulator("fm")
def _mod_fm(mod, n, lg, rng, phys, echoes):
    """FM: phase = 2 pi f_dev / fs * cumulative sum of the message (peak <= 1)."""
    deviation = rng.uniform(*phys.fm_deviation_hz_range, (n, 1)) / phys.fs_hz
    message = _message(n, lg, rng, phys, real=True)
    return _filter(_unit_phasor(2 * np.pi * deviation * np.cumsum(message, axis=1)),
                   echoes, phys)


# ---------------------------------------------------------------- channel

def _flat_fade(n: int, frame_len: int, rng: np.random.Generator, phys: Physics) -> np.ndarray:
    """Rician (or Rayleigh) flat fade over the frame with a random line-of-sight phase.

    The scattered part is a sum of sinusoids (Jakes-like) at the frame's Doppler, computed at
    _FADE_KNOTS points and interpolated linearly (it moves by at most 0.1 cycle per frame).
    """
    k = 10 ** (rng.uniform(*phys.rician_k_db_range, (n, 1)) / 10)
    k[rng.random((n, 1)) < phys.rayleigh_fraction] = 0.0
    doppler = rng.uniform(0, phys.doppler_max_cycles_per_sample, (n, 1, 1))
    angle = rng.uniform(0, 2 * np.pi, (n, _SOS_PATHS, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, _SOS_PATHS, 1))
    knots = np.linspace(0, frame_len - 1, _FADE_KNOTS)
    scatter = np.exp(1j * (2 * np.pi * doppler * np.cos(angle) * knots + phase)).sum(axis=1)
    scatter /= math.sqrt(_SOS_PATHS)
    los = np.exp(1j * rng.uniform(0, 2 * np.pi, (n, 1)))
    fade = np.sqrt(k / (k + 1)) * los + np.sqrt(1 / (k + 1)) * scatter
    fade = fade.astype(np.complex64)
    left, weight = _knot_weights(frame_len)  # linear interpolation (no BLAS: small batches)
    return fade[:, left] + (fade[:, left + 1] - fade[:, left]) * weight


def _phasor(freq: np.ndarray, length: int) -> np.ndarray:
    """exp(j 2 pi freq n), n < length, complex64, from two short tables of exponentials."""
    block = math.ceil(math.sqrt(length))
    fine = np.exp(2j * np.pi * freq * np.arange(block)).astype(np.complex64)
    coarse = np.exp(2j * np.pi * freq * (block * np.arange(math.ceil(length / block))))
    out = coarse.astype(np.complex64)[:, :, None] * fine[:, None, :]
    return out.reshape(len(freq), -1)[:, :length]


def _resample(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """x (n, lg) at fractional positions t (n, m): 4-point cubic Lagrange, Farrow form."""
    i = np.floor(t).astype(np.intp)
    mu = (t - i).astype(np.float32)
    i += (np.arange(x.shape[0]) * x.shape[1])[:, None]
    flat = x.ravel()
    xm1, x0, x1, x2 = flat[i - 1], flat[i], flat[i + 1], flat[i + 2]
    c3 = (x2 - xm1) * np.float32(1 / 6) + (x0 - x1) * np.float32(0.5)
    c2 = (xm1 + x1) * np.float32(0.5) - x0
    c1 = x1 - x0 * np.float32(0.5) - xm1 * np.float32(1 / 3) - x2 * np.float32(1 / 6)
    return ((c3 * mu + c2) * mu + c1) * mu + x0


# ---------------------------------------------------------------- frames

def _layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ToolchainError(f"unknown layout {name!r}: expected one of {', '.join(LAYOUTS)}.")
    return LAYOUTS[name]


def _check_class(layout: Layout, class_name: str) -> Modulation:
    if class_name not in layout.modulations:
        raise ToolchainError(
            f"unknown class {class_name!r} for the {layout.name} layout: expected one of "
            f"{', '.join(layout.classes)}. Class names are case-sensitive.")
    return layout.modulations[class_name]


def baseband(class_name: str, n: int, rng: np.random.Generator, length: int = 1024,
             layout: str = "rml2018") -> np.ndarray:
    """The transmitted complex baseband (n, length) before any channel effect, not normalised.

    `length` must be a multiple of the samples per symbol (8). The DFT-domain shaping is
    circular, so the first and last few symbols wrap around.
    """
    lay = _layout(layout)
    mod = _check_class(lay, class_name)
    if length % lay.physics.sps:
        raise ValueError(f"length {length} is not a multiple of {lay.physics.sps}")
    return _MODULATORS[mod.kind](mod, n, length, rng, mod.physics(lay.physics), None)


def _power(y: np.ndarray) -> np.ndarray:
    """Mean |y|^2 per frame, (n, 1)."""
    parts = y.view(np.float32)
    return 2 * np.mean(parts * parts, axis=1, keepdims=True)


def _true_snr_db(label_db: float, phys: Physics) -> float:
    if phys.snr_label == "radioml":
        return 2 * label_db - 10 * math.log10(2)  # noise_amp 10^(-L/10) per I/Q rail
    if phys.snr_label == "true":
        return label_db
    raise ValueError(f"Physics.snr_label {phys.snr_label!r}: expected 'radioml' or 'true'")


def true_snr_db(label_db: float, layout: str = "rml2018") -> float:
    """The true per-sample SNR in dB of frames labelled `label_db` (module docstring)."""
    return _true_snr_db(label_db, _layout(layout).physics)


def generate_frames(class_name: str, snr_db: float, n: int, rng: np.random.Generator,
                    frame_len: int = 1024, *, layout: str = "rml2018") -> np.ndarray:
    """`n` received frames (n, frame_len) complex64 of one class at one SNR.

    `layout` picks the class set and physics ("rml2018" or "rml2016"). `snr_db` is the SNR
    label (module docstring: the true SNR is `true_snr_db(snr_db)`); `snr_db=math.inf` leaves
    the noise out but draws the same signal from `rng`.
    Frames are normalised per the layout (unit mean power, or unit L1 norm for rml2016).
    """
    lay = _layout(layout)
    mod = _check_class(lay, class_name)
    phys = lay.physics
    noise_rng = np.random.default_rng(rng.integers(0, 2 ** 63))  # own stream: see docstring
    lg = _gen_length(frame_len, phys)
    clock = 1 + rng.uniform(-phys.sample_rate_offset_max, phys.sample_rate_offset_max, (n, 1))
    start = _PAD_SYMBOLS * phys.sps + rng.uniform(0, phys.sps, (n, 1))  # timing offset
    echoes = _Echoes.draw(n, rng, phys)
    fade = _flat_fade(n, frame_len, rng, phys)
    cfo = rng.uniform(-phys.cfo_max_cycles_per_sample, phys.cfo_max_cycles_per_sample, (n, 1))
    x = _MODULATORS[mod.kind](mod, n, lg, rng, mod.physics(phys), echoes)
    y = _resample(x, start + np.arange(frame_len) * clock)
    y *= fade * _phasor(cfo, frame_len)
    y /= np.sqrt(_power(y))  # signal power 1 per frame: the SNR's reference
    if phys.normalisation == "power" and mod.frame_rms != (1.0, 1.0):
        y *= rng.uniform(*mod.frame_rms, (n, 1)).astype(np.float32)  # the class's level
    noise_power = 0.0
    if math.isfinite(snr_db):
        noise_power = 10 ** (-_true_snr_db(snr_db, phys) / 10)
        noise = noise_rng.standard_normal((n, 2 * frame_len), np.float32).view(np.complex64)
        noise *= np.float32(math.sqrt(noise_power / 2))
        y += noise
    if phys.normalisation == "power":
        y /= np.float32(math.sqrt(1 + noise_power))  # one gain for every class at this label
    else:
        y /= np.sum(np.abs(y), axis=1, keepdims=True)
    return y


def _cell_rng(layout: Layout, class_name: str, snr_db: int, seed: int,
              chunk: int) -> np.random.Generator:
    entropy = [seed, layout.seed_tag, layout.classes.index(class_name), snr_db + 1000, chunk]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _generate_cell(layout: Layout, class_name: str, snr_db: int, frames_per_cell: int,
                   seed: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first frame index, frames) chunks of one cell, each from its own SeedSequence."""
    for chunk, first in enumerate(range(0, frames_per_cell, CELL_CHUNK_FRAMES)):
        n = min(CELL_CHUNK_FRAMES, frames_per_cell - first)
        rng = _cell_rng(layout, class_name, snr_db, seed, chunk)
        yield first, generate_frames(class_name, snr_db, n, rng, layout.frame_len,
                                     layout=layout.name)


def cell_frames(class_name: str, snr_db: int, frames_per_cell: int, seed: int = 0,
                layout: str = "rml2018") -> np.ndarray:
    """All frames (frames_per_cell, frame_len) complex64 of one cell, as the writers store them."""
    lay = _layout(layout)
    _check_class(lay, class_name)
    return np.concatenate([f for _, f in _generate_cell(lay, class_name, snr_db,
                                                        frames_per_cell, seed)])


# ---------------------------------------------------------------- writing

@dataclass(frozen=True)
class _Plan:
    layout: Layout
    classes: tuple[str, ...]  # in the layout's class order
    snrs_db: tuple[int, ...]  # ascending
    frames_per_cell: int
    seed: int

    @property
    def n_frames(self) -> int:
        return len(self.classes) * len(self.snrs_db) * self.frames_per_cell


def _plan(layout_name: str, frames_per_cell, seed, classes, snrs_db) -> _Plan:
    """Validate the user's choices; subsets are put in the layout's order."""
    lay = _layout(layout_name)
    if isinstance(frames_per_cell, bool) or not isinstance(frames_per_cell, (int, np.integer)) \
            or frames_per_cell < 1:
        raise ToolchainError(f"frames-per-cell {frames_per_cell!r}: expected an integer >= 1 "
                             f"(the real {lay.name} file has {lay.real_frames_per_cell}).")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ToolchainError(f"seed {seed!r}: expected an integer >= 0.")
    if isinstance(classes, str):
        classes = [classes]
    if classes is None:
        chosen = lay.classes
    else:
        for name in classes:
            _check_class(lay, name)
        chosen = tuple(c for c in lay.classes if c in set(classes))
        if not chosen:
            raise ToolchainError(f"no classes given: expected some of {', '.join(lay.classes)}.")
    if snrs_db is None:
        snrs = lay.snrs_db
    else:
        bad = [s for s in snrs_db if s not in lay.snrs_db]
        if bad:
            raise ToolchainError(f"SNR {bad[0]!r} dB is not on the {lay.name} grid: expected "
                                 f"values from {', '.join(map(str, lay.snrs_db))}.")
        snrs = tuple(s for s in lay.snrs_db if s in set(snrs_db))
        if not snrs:
            raise ToolchainError(f"no SNRs given: expected some of "
                                 f"{', '.join(map(str, lay.snrs_db))}.")
    return _Plan(lay, chosen, snrs, int(frames_per_cell), int(seed))


@contextmanager
def _atomic_output(path: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only if the body completes."""
    if path.is_dir():
        raise ToolchainError(f"{path}: is a directory; expected a file name for the output.")
    if path.exists() and not force:
        raise ToolchainError(f"{path}: already exists. Pass --force (force=True) to overwrite "
                             "it, or choose another output path.")
    if not path.parent.is_dir():
        raise ToolchainError(f"{path}: the directory {path.parent} does not exist. Create it "
                             "first, or choose another output path.")
    with atomic_path(path) as tmp:
        yield tmp


def _progress(plan: _Plan, desc: str) -> tqdm:
    return tqdm(total=plan.n_frames, unit="frame", unit_scale=True, desc=desc, disable=None,
                file=sys.stderr)


class _RowBuffer:
    """Collects consecutive rows of X, Y, Z and writes them in blocks (few, large HDF5 writes)."""

    def __init__(self, x_set, y_set, z_set, block_rows: int = 2048):
        self.sets, self.block_rows = (x_set, y_set, z_set), block_rows
        self.written = 0  # rows already in the file
        self.pending: list[tuple[np.ndarray, int, int]] = []  # (X rows, Y column, SNR)
        self.n_pending = 0

    @property
    def next_row(self) -> int:
        return self.written + self.n_pending

    def add(self, x: np.ndarray, column: int, snr_db: int) -> None:
        self.pending.append((x, column, snr_db))
        self.n_pending += len(x)
        if self.n_pending >= self.block_rows:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        n = self.n_pending
        y = np.zeros((n, self.sets[1].shape[1]), dtype=np.int64)
        z = np.empty((n, 1), dtype=np.int64)
        k = 0
        for x, column, snr_db in self.pending:
            y[k:k + len(x), column] = 1
            z[k:k + len(x)] = snr_db
            k += len(x)
        x = np.concatenate([p[0] for p in self.pending])
        for dataset, block in zip(self.sets, (x, y, z)):
            dataset[self.written:self.written + n] = block
        self.written += n
        self.pending, self.n_pending = [], 0


def write_rml2018(path, frames_per_cell: int, seed: int = 0,
                  classes: Sequence[str] | None = None, snrs_db: Sequence[int] | None = None,
                  force: bool = False) -> Path:
    """Write an HDF5 file in the RadioML 2018.01A layout; return its path.

    X (N, 1024, 2) float32, Y (N, 24) int64 one-hot, Z (N, 1) int64 SNR dB, rows class-then-SNR
    ascending: row = rml2018_row(i, j, k, frames_per_cell, len(snrs)) where i, j index the
    written classes and SNRs. A subset of classes or SNRs is written in the real class order
    and ascending SNR, and Y keeps all 24 columns (the column is the class's real index). The
    file appears under `path` only when complete; an existing file is an error unless `force`.
    """
    plan = _plan("rml2018", frames_per_cell, seed, classes, snrs_db)
    lay, fpc, n_snrs = plan.layout, plan.frames_per_cell, len(plan.snrs_db)
    path = Path(path)
    with _atomic_output(path, force) as tmp, h5py.File(tmp, "w") as f, \
            _progress(plan, path.name) as bar:
        x_set = f.create_dataset(RML2018_DATASETS[0], (plan.n_frames, lay.frame_len, 2), "float32")
        y_set = f.create_dataset(RML2018_DATASETS[1], (plan.n_frames, len(lay.classes)), "int64")
        z_set = f.create_dataset(RML2018_DATASETS[2], (plan.n_frames, 1), "int64")
        f.attrs["generator"] = "flows.synth"
        f.attrs["seed"] = plan.seed
        rows = _RowBuffer(x_set, y_set, z_set)
        for i, name in enumerate(plan.classes):
            column = lay.classes.index(name)
            for j, snr in enumerate(plan.snrs_db):
                for first, frames in _generate_cell(lay, name, snr, fpc, plan.seed):
                    assert rows.next_row == rml2018_row(i, j, first, fpc, n_snrs)
                    rows.add(frames.view(np.float32).reshape(len(frames), lay.frame_len, 2),
                             column, snr)
                    bar.update(len(frames))
        rows.flush()
    return path


def write_rml2016(path, frames_per_cell: int, seed: int = 0,
                  classes: Sequence[str] | None = None, snrs_db: Sequence[int] | None = None,
                  force: bool = False) -> Path:
    """Write a pickle in the RadioML 2016.10a layout; return its path.

    A dict (modulation, snr) -> (frames_per_cell, 2, 128) float32 (I row 0, Q row 1), keys in
    class then SNR order, loadable with pickle.load(f, encoding="latin1"). The whole dict is
    held in memory (1 KiB per frame). Same subset, atomicity and `force` rules as write_rml2018.
    """
    plan = _plan("rml2016", frames_per_cell, seed, classes, snrs_db)
    lay, fpc = plan.layout, plan.frames_per_cell
    path = Path(path)
    data: dict[tuple[str, int], np.ndarray] = {}
    with _atomic_output(path, force) as tmp:
        with _progress(plan, path.name) as bar:
            for name in plan.classes:
                for snr in plan.snrs_db:
                    cell = np.empty((fpc, 2, lay.frame_len), dtype=np.float32)
                    for first, frames in _generate_cell(lay, name, snr, fpc, plan.seed):
                        cell[first:first + len(frames), 0] = frames.real
                        cell[first:first + len(frames), 1] = frames.imag
                        bar.update(len(frames))
                    data[(name, int(snr))] = cell
        with open(tmp, "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


# ---------------------------------------------------------------- command line

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows.synth",
        description="Write a synthetic RadioML file (2018.01A HDF5 or 2016.10a pickle layout).",
        epilog="SNR values are RadioML labels, as in the real files: label L is a true SNR "
               "(per complex sample, full band) of 2 L - 3 dB for a unit-power class.")
    parser.add_argument("--out", required=True, type=Path, help="output file")
    parser.add_argument("--frames-per-cell", required=True, type=int,
                        help="frames per (class, SNR) cell (the real files: 4096 / 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--format", choices=tuple(LAYOUTS), default="rml2018",
                        help="file layout (default rml2018)")
    parser.add_argument("--classes", nargs="+", metavar="CLASS",
                        help="subset of classes (default all); written in the real class order")
    parser.add_argument("--snr-min", type=int, help="lowest SNR in dB (default the grid's)")
    parser.add_argument("--snr-max", type=int, help="highest SNR in dB (default the grid's)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # so SIGTERM also removes the temporary file


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns the exit code (2 for a user error, with `error: ...` on stderr)."""
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:  # argparse has printed usage and the error
        return stop.code if isinstance(stop.code, int) else 2
    try:
        lay = _layout(args.format)
        lo = lay.snrs_db[0] if args.snr_min is None else args.snr_min
        hi = lay.snrs_db[-1] if args.snr_max is None else args.snr_max
        snrs = [s for s in lay.snrs_db if lo <= s <= hi]
        if not snrs:
            raise ToolchainError(f"--snr-min {lo} --snr-max {hi} selects no SNR: the {lay.name} "
                                 f"grid is {lay.snrs_db[0]} to {lay.snrs_db[-1]} dB, step 2.")
        plan = _plan(lay.name, args.frames_per_cell, args.seed, args.classes, snrs)
        writer = write_rml2018 if lay.name == "rml2018" else write_rml2016
        started = time.perf_counter()
        out = writer(args.out, plan.frames_per_cell, seed=plan.seed, classes=plan.classes,
                     snrs_db=plan.snrs_db, force=args.force)
        seconds = time.perf_counter() - started
    except ToolchainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: nothing written to {args.out}", file=sys.stderr)
        return 130
    size_mib = out.stat().st_size / 2 ** 20
    print(f"wrote {out} ({lay.name}): {plan.n_frames} frames = {len(plan.classes)} classes x "
          f"{len(plan.snrs_db)} SNRs x {plan.frames_per_cell}, {size_mib:.1f} MiB, "
          f"{seconds:.1f} s ({plan.n_frames / seconds:.0f} frames/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
