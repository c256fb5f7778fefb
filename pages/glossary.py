"""Glossary: each element the Explorer and the figures draw, with the paper's equation it comes from."""

import streamlit as st

from kpsem.app_support.widgets.page_start import page_start

page_start("Glossary", needs="nothing")
st.caption("What each drawn element is, and where the paper defines it: Effective Action Recognition with Embedded "
           "Key Point Shifts, sections 3.2 and 3.3 (equation numbers as printed). Everything drawn is read from "
           "the KPSEM module of the loaded checkpoint, never recomputed.")

TERMS = (  # (term, what the app draws, the paper's definition)
    ("Separation centre",
     "the point where a set's two split lines cross, per frame; one per AReSE set (the Explorer's **Sets**)",
     r"Eq. (4)-(5): $B_i = \mathcal{I}_i(F_i)$, $O_{a_i} = O_i + B_i$: the feature map's geometric centre "
     r"$O_i$ moved by a bias that a small MLP reads from frame $i$"),
    ("Region",
     "the K = 4 quadrants around the separation centre (top-left, top-right, bottom-left, bottom-right), each "
     "with its own colour and marker shape",
     r"Section 3.3 (a), Fig. 4: the adaptive regional feature maps $F_a = \{F_a^{(1,1)}, \dots, F_a^{(T,K)}\}$ "
     r"the centre of Eq. (5) cuts each frame into"),
    ("Key point",
     "a marker at the strongest response of one channel in one region and frame",
     r"Eq. (6)-(7): $I_r = \arg\max_{(h,w)} F_r(h,w)$ (its place), $V_r = \max F_r$ (its value); "
     r"$I$ is $K \times C \times T \times 2$"),
    ("Shift",
     "an arrow from a key point to where it moves in the next frame; dashed when it crosses a region border",
     r"Eq. (8)-(10): $\Delta_{i,\alpha,\beta} = I_{i+1,\beta} - I_{i,\alpha}$ between every pair of regions, "
     r"weighted by $W_{i,\alpha,\beta} = \mathcal{G}_n\big(1 / (|V_{i,\alpha} - V_{i+1,\beta}| + 0.1)\big)$ into "
     r"$S_{i,\alpha} = \sum_\beta W_{i,\alpha,\beta}\,\Delta_{i,\alpha,\beta}$"),
    ("Regional weight",
     "how much a region counts in a channel between two frames; the Explorer draws the channels with the most "
     "(**Channels: top by regional weight**)",
     r"Eq. (11): $W_R = \mathcal{G}_k(\mathcal{P}_T(\mathcal{P}_R(F_a)))$: each region's mean value, averaged "
     r"over two adjacent frames, softmax over the K regions"),
    ("RKPS",
     "not drawn as such: the regional key point shifts the arrows add up to, per set, channel and frame pair",
     r"Eq. (12): $RKPS = W_R \odot S$; one per set (Eq. 2), each embedded by its own linear layer and summed "
     r"(Eq. 3), then joined to the spatial feature (Eq. 1)"),
    ("Grad-CAM",
     "the heat map over each frame, for the class named above it; the difference map subtracts KPSEM's from "
     "the baseline's",
     "no equation of the paper: Grad-CAM (Selvaraju et al., the paper's reference [48]), used in its section "
     "4.4 and Fig. 9"),
)

for term, drawn, paper in TERMS:  # text of this file only: Markdown and formulas are meant
    st.markdown(f"**{term}**: {drawn}.  \n{paper}.")
st.caption("Symbols: F the features KPSEM reads (after conv4 here, C × T × H × W), i a frame, r a region, "
           "α and β regions of frames i and i + 1, 𝒢 a softmax (over the next frame's regions, or over regions), "
           "𝒫 an average pooling (over a region, or over two frames).")
