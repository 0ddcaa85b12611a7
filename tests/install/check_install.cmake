# ctest script: install the build tree into a scratch prefix, then build and run a
# program against it with find_package(shmsched CONFIG) and with pkg-config.
# -D BUILD_DIR=... -D SOURCE_DIR=... -D WORK_DIR=...
file(REMOVE_RECURSE ${WORK_DIR})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(rc)
  message(FATAL_ERROR "install failed: ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/install/consumer -B ${WORK_DIR}/consumer
                        -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_BUILD_TYPE=Release
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "find_package(shmsched CONFIG) failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/consumer RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building against the installed package failed")
endif()
# A fault point it passes, armed from the environment: must be inert in the package.
execute_process(COMMAND ${CMAKE_COMMAND} -E env SHMSCHED_FAULT=complete_before_free:1 ${WORK_DIR}/consumer/consumer
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "the installed-package program failed: ${rc}")
endif()
# `man shmctl` is ours (generated from shmctl --help when help2man is there, as the
# bootstrap installs it): it names the tool's verbs, not shmctl(2).
if(EXISTS ${BUILD_DIR}/tools/shmctl)
  file(GLOB_RECURSE manpage ${WORK_DIR}/prefix/*shmctl.1)
  if(NOT manpage)
    message(FATAL_ERROR "no shmctl.1 installed (is help2man missing?)")
  endif()
  file(STRINGS ${manpage} verbs REGEX "worker")
  if(NOT verbs)
    message(FATAL_ERROR "${manpage} does not describe shmctl's verbs")
  endif()
endif()
# No fault point anywhere in what is installed: not in the exported usage requirements,
# the pkg-config file, the library or shmctl.
file(GLOB_RECURSE installed_text ${WORK_DIR}/prefix/*.cmake ${WORK_DIR}/prefix/*.pc)
foreach(f IN LISTS installed_text)
  file(STRINGS ${f} hits REGEX "FAULT")
  if(hits)
    message(FATAL_ERROR "${f} names fault points: ${hits}")
  endif()
endforeach()
file(GLOB_RECURSE installed_bin ${WORK_DIR}/prefix/*.a ${WORK_DIR}/prefix/*/shmctl)
if(NOT installed_bin)
  message(FATAL_ERROR "no installed library found under ${WORK_DIR}/prefix")
endif()
foreach(f IN LISTS installed_bin)
  file(STRINGS ${f} hits REGEX "SHMSCHED_FAULT|sem_acquire_ledger|complete_before_free")
  if(hits)
    message(FATAL_ERROR "${f} contains fault points: ${hits}")
  endif()
endforeach()
# pkg-config: the same program from the .pc file alone.
find_program(PKG_CONFIG pkg-config REQUIRED)
file(GLOB_RECURSE pcfile ${WORK_DIR}/prefix/*/shmsched.pc)
get_filename_component(pcdir "${pcfile}" DIRECTORY)
set(ENV{PKG_CONFIG_PATH} "${pcdir}")
execute_process(COMMAND ${PKG_CONFIG} --cflags --libs shmsched OUTPUT_VARIABLE flags RESULT_VARIABLE rc
                OUTPUT_STRIP_TRAILING_WHITESPACE)
if(rc)
  message(FATAL_ERROR "pkg-config does not know shmsched")
endif()
separate_arguments(flags UNIX_COMMAND "${flags}")
execute_process(COMMAND c++ ${SOURCE_DIR}/tests/install/consumer/main.cpp ${flags} -o ${WORK_DIR}/pc_consumer
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building with pkg-config flags failed")
endif()
execute_process(COMMAND ${WORK_DIR}/pc_consumer RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "the pkg-config program failed: ${rc}")
endif()
