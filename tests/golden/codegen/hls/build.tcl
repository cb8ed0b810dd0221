# SPDX-License-Identifier: Apache-2.0
# Vitis HLS: C-simulation, synthesis, co-simulation and IP export of the dyadiq model.
# Run: vitis_hls -f build.tcl                       (all steps)
#      vitis_hls -f build.tcl -tclargs "csim csynth"  (a subset)
set steps {csim csynth cosim export}
if {[llength $argv] > 0} { set steps [lindex $argv 0] }
open_project -reset dyadiq_prj
set_top dyadiq_top
add_files model.cpp -cflags "-std=c++14"
add_files -tb tb.cpp -cflags "-std=c++14"
add_files -tb tb_in0.bin
open_solution -reset solution1 -flow_target vivado
set_part {xcvu13p-flga2577-2-e}
create_clock -period 5 -name default
if {[lsearch $steps csim] >= 0} { csim_design -argv "1 tb_in0.bin tb_out0.bin" }
if {[lsearch $steps csynth] >= 0} { csynth_design }
if {[lsearch $steps cosim] >= 0} { cosim_design -argv "1 tb_in0.bin tb_out0.bin" }
if {[lsearch $steps export] >= 0} { export_design -format ip_catalog }
exit
