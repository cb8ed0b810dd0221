// SPDX-License-Identifier: Apache-2.0
#ifndef DYADIQ_MODEL_H
#define DYADIQ_MODEL_H
#include "defines.h"
void dyadiq_top(hls::stream<float> &in_x, hls::stream<float> &out0);
#endif
