// An optional sound cue for a new critical alert: two short tones from Web Audio (no
// file to ship). Browsers allow sound only after a click on the page: signing in or
// the sound button is that click.

const KEY = "sc.sound";
let context = null;

export function soundOn() {
  return localStorage.getItem(KEY) !== "off";
}

export function setSound(on) {
  localStorage.setItem(KEY, on ? "on" : "off");
  if (on) unlock();
}

/** Call from a click handler: creates or resumes the audio context. */
export function unlock() {
  try {
    if (!context) context = new AudioContext();
    if (context.state === "suspended") context.resume();
  } catch {
    context = null;
  }
}

export function cue() {
  if (!soundOn() || !context || context.state !== "running") return false;
  const now = context.currentTime;
  [[880, 0], [660, 0.22], [880, 0.44]].forEach(([freq, at]) => {
    const osc = context.createOscillator();
    const gain = context.createGain();
    osc.type = "square";
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, now + at);
    gain.gain.exponentialRampToValueAtTime(0.15, now + at + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, now + at + 0.18);
    osc.connect(gain).connect(context.destination);
    osc.start(now + at);
    osc.stop(now + at + 0.2);
  });
  return true;
}
